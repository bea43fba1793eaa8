"""`train --resume`: a run stopped after epoch k and resumed ends where one never stopped."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tests.conftest import TINY as CONFTEST_TINY
from training import resume
from training.config import ConfigError

# the shared tiny config as flags, without its one epoch (each test sets its own)
TINY = [f"--{o}" for o in CONFTEST_TINY if not o.startswith("optim.epochs")]
TINY.append("--optim.patience=10")
STATE = Path("reports/synthetic") / resume.STATE_FILE


def train(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "training", "train", "--data", "synthetic", "--quiet", *TINY, *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=600,
        env=os.environ | {"OMP_NUM_THREADS": "1"},
    )


def report(cwd: Path, version: int) -> dict:
    return json.loads((cwd / f"reports/synthetic/{version}/report.json").read_text())


@pytest.fixture(scope="module")
def stopped(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A run of 2 epochs (its state file written after each), as if stopped there."""
    folder = tmp_path_factory.mktemp("stopped")
    assert train(folder, "--optim.epochs=2").returncode == 0
    return folder


def test_a_resumed_run_ends_with_the_figures_of_an_uninterrupted_one(
    stopped: Path, tmp_path: Path
) -> None:
    assert train(tmp_path, "--optim.epochs=4").returncode == 0
    resumed = train(stopped, "--optim.epochs=4", "--resume", str(STATE))
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    uninterrupted, continued = report(tmp_path, 1), report(stopped, 2)
    assert continued["metrics"] == uninterrupted["metrics"]  # exact, on the CPU
    assert len(continued["epochs"]) == 4

    def figures(run: dict) -> list[dict]:
        return [{k: v for k, v in e.items() if k != "seconds"} for e in run["epochs"]]

    assert figures(continued) == figures(uninterrupted)


def test_a_state_of_another_run_is_refused_before_training(stopped: Path) -> None:
    state = str(stopped / STATE)
    other = train(stopped, "--network.d_hidden=8", "--resume", state)
    assert other.returncode == 2
    assert "written by a run with another config or data; differs in network.d_hidden" in (
        other.stderr
    )
    missing = train(stopped, "--resume", "nowhere.pt")
    assert missing.returncode == 2
    assert "--resume nowhere.pt: no such file" in missing.stderr
    (stopped / "junk.pt").write_bytes(b"not a state")
    junk = train(stopped, "--resume", "junk.pt")
    assert junk.returncode == 2
    assert "not a training state" in junk.stderr


def test_a_state_of_another_number_of_ranks_is_refused(stopped: Path) -> None:
    config = torch.load(stopped / STATE, weights_only=True)["config"]
    assert resume.load(stopped / STATE, config, world=1).epoch >= 2
    with pytest.raises(ConfigError, match=r"written by 1 rank\(s\), this run has 2"):
        resume.load(stopped / STATE, config, world=2)
