"""`train --resume`: a run stopped after epoch k and resumed ends where one never stopped."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from harness.training import training_cli
from tests.conftest import TINY as CONFTEST_TINY
from training.config import ConfigError
from training.fit import resume

# the shared tiny config as flags, without its one epoch (each test sets its own)
TINY = [f"--{o}" for o in CONFTEST_TINY if not o.startswith("optim.epochs")]
TINY.append("--optim.patience=10")
STATE = Path("reports/synthetic") / resume.STATE_FILE
ENV = os.environ | {"OMP_NUM_THREADS": "1"}


def command(*args: str, data: str = "synthetic") -> list[str]:
    return [sys.executable, "-m", "training", "train", "--data", data, "--quiet", *TINY, *args]


def train(cwd: Path, *args: str, data: str = "synthetic") -> subprocess.CompletedProcess[str]:
    return training_cli(*command(*args, data=data)[3:], cwd=cwd)


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

    assert figures(continued) == figures(uninterrupted)
    # and the refit after it replays the same epochs the same way
    assert continued["fit"] == uninterrupted["fit"]
    refits = [figures({"epochs": run["refit_epochs"]}) for run in (continued, uninterrupted)]
    assert refits[0] == refits[1]
    assert len(refits[0]) == continued["best_epoch"]


def figures(run: dict) -> list[dict]:
    """Every epoch's figures but the timings."""
    return [
        {k: v for k, v in e.items() if k not in ("seconds", "samples_per_s")} for e in run["epochs"]
    ]


def test_a_streamed_run_stopped_within_an_epoch_resumes_at_its_batch(tmp_path: Path) -> None:
    """Killed part-way through an epoch of a prepared folder, resumed from the state it wrote
    there, a run ends with exactly the figures of one never stopped."""
    prepared = training_cli(
        "prepare", "--data", "synthetic", "--out", "prep", "--quiet", *TINY, cwd=tmp_path
    )
    assert prepared.returncode == 0, prepared.stderr[-2000:]
    flags = ["--optim.epochs=2", "--optim.batch_size=16", "--optim.state_every_batches=7"]
    whole, stopped = tmp_path / "whole", tmp_path / "stopped"
    whole.mkdir()
    stopped.mkdir()
    assert train(whole, *flags, data="../prep").returncode == 0
    process = subprocess.Popen(
        command(*flags, data="../prep"), cwd=stopped, env=ENV, stderr=subprocess.DEVNULL
    )
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and process.poll() is None:
            if (stopped / STATE).is_file():
                if torch.load(stopped / STATE, weights_only=True)["batch"] > 0:
                    break  # a state written within an epoch
            time.sleep(0.02)
    finally:
        process.kill()
        process.wait()
    state = torch.load(stopped / STATE, weights_only=True)
    assert state["batch"] > 0, "no state was written within an epoch"
    assert state["batch"] % 7 == 0
    resumed = train(stopped, *flags, "--resume", str(STATE), data="../prep")
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert report(stopped, 1)["metrics"] == report(whole, 1)["metrics"]
    assert figures(report(stopped, 1)) == figures(report(whole, 1))


def test_states_within_an_epoch_need_a_prepared_folder(tmp_path: Path) -> None:
    refused = train(tmp_path, "--optim.state_every_batches=5")
    assert refused.returncode == 2
    assert "optim.state_every_batches needs a prepared folder" in refused.stderr


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
