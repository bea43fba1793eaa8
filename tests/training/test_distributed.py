"""torchrun: several ranks train one model (gloo on CPU), as well as one process does."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from harness.training import LEARNING, TORCHRUN, training_cli
from service.repository import load_artifact
from training import distributed
from training.config import ConfigError
from training.distributed import Ranks, rank_rows


@pytest.mark.parametrize(("n", "world"), [(10, 1), (10, 2), (11, 2), (12, 3), (2, 3)])
def test_rank_rows_are_disjoint_equal_and_cover_all_but_a_remainder(n: int, world: int) -> None:
    order = np.random.default_rng(0).permutation(n)
    parts = [rank_rows(order, Ranks(rank, world)) for rank in range(world)]
    assert len({len(p) for p in parts}) == 1  # every rank runs the same number of batches
    flat = np.concatenate(parts)
    assert len(set(flat.tolist())) == len(flat)  # disjoint
    assert len(flat) == n - n % world  # everything but fewer than `world` rows
    # together they are the shuffled order, interleaved: global batch k is every rank's batch k
    assert sorted(flat.tolist()) == sorted(order[: len(flat)].tolist())


@pytest.mark.skipif(torch.cuda.is_available(), reason="a machine without a GPU")
def test_without_a_gpu_ranks_train_on_the_cpu_and_cuda_is_refused(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    assert distributed.start(30, "auto") == Ranks(0, 1, "cpu")
    assert distributed.start(30, "cpu").device == "cpu"
    with pytest.raises(ConfigError, match="optim.device=cuda but torch sees no GPU"):
        distributed.start(30, "cuda")
    monkeypatch.setenv("LOCAL_RANK", "first")
    with pytest.raises(ConfigError, match="not numbers"):
        distributed.start(30, "auto")


def run_training(
    tmp_path: Path, ranks: int, *extra: str, data: str = "synthetic"
) -> subprocess.CompletedProcess[str]:
    launcher = (
        [str(TORCHRUN), "--standalone", f"--nproc_per_node={ranks}"]
        if ranks > 1
        else [sys.executable]
    )
    return subprocess.run(
        [*launcher, "-m", "training", "train", "--data", data, "--quiet", *LEARNING, *extra],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=900,
        env=os.environ | {"OMP_NUM_THREADS": "1"},
    )


@pytest.mark.slow
def test_two_ranks_streaming_prepared_shards_learn_what_one_process_learns(tmp_path: Path) -> None:
    """One process trains in memory; two ranks stream the same log, prepared into shards."""
    one, two = tmp_path / "one", tmp_path / "two"
    one.mkdir()
    two.mkdir()
    prepared = training_cli(
        "prepare",
        "--data",
        "synthetic",
        "--out",
        "prep",
        "--quiet",
        "--shard-events=3000",
        *LEARNING,
        cwd=two,
    )
    assert prepared.returncode == 0, prepared.stderr[-3000:]
    alone = run_training(one, 1)
    ddp = run_training(two, 2, "--optim.loader_workers=1", data="prep")
    assert alone.returncode == 0, alone.stderr[-3000:]
    assert ddp.returncode == 0, ddp.stderr[-3000:]
    assert ddp.stdout.count("artifact: models/synthetic/1") == 1  # rank 0 alone writes
    figures = [
        json.loads((d / "reports/synthetic/1/report.json").read_text())["metrics"]
        for d in (one, two)
    ]
    # floors between the baselines (0.58, 0.63, 0.5) and what one process reaches (0.70, 0.73, 0.95)
    for metric, floor in (("click_auc", 0.65), ("like_auc", 0.67), ("gender_auc", 0.85)):
        assert figures[1][metric] > floor, (metric, figures)
        assert abs(figures[0][metric] - figures[1][metric]) < 0.05, (metric, figures)
    artifact = load_artifact(two / "models", "synthetic")  # the same contract checks
    assert artifact.manifest.parity_max_abs_diff < 1e-4
    # both published a refit on every event, label and item (two ranks streaming its shards)
    fits = [load_artifact(d / "models", "synthetic").manifest.fit for d in (one, two)]
    assert fits[0] is not None
    assert fits[1] is not None
    assert fits[1].refit
    assert fits[0] == fits[1].model_copy(update={"epochs": fits[0].epochs})
    assert not (two / "models" / "synthetic" / "2").exists()


@pytest.mark.parametrize(
    ("fault", "said"),
    # gloo says "Timed out waiting ...ms for recv": the collective timeout or its own 30 s
    [(signal.SIGKILL, "exitcode  : -9"), (signal.SIGSTOP, "timed out")],
    ids=["killed", "hung"],
)
def test_a_rank_that_dies_or_hangs_ends_the_run_with_an_error(
    tmp_path: Path, fault: signal.Signals, said: str
) -> None:
    process = subprocess.Popen(
        [
            str(TORCHRUN),
            "--standalone",
            "--nproc_per_node=2",
            "-m",
            "training",
            "train",
            "--data",
            "synthetic",
            "--quiet",
            "--optim.epochs=500",
            "--optim.patience=500",
            "--optim.collective_timeout_s=30",
            *LEARNING[1:5],
        ],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    lines: list[str] = []
    victim = None
    try:
        victim = _wait_for_rank(process.pid, 1)
        time.sleep(3)  # into training
        os.kill(victim, fault)  # hung: the other rank waits 10 s in a collective, then fails
        deadline = time.monotonic() + 60
        assert process.stdout is not None
        for line in process.stdout:  # until the launcher says what happened
            lines.append(line)
            if said in line.lower() or time.monotonic() > deadline:
                break
        if fault == signal.SIGKILL:
            process.wait(timeout=60)
            assert process.returncode != 0
    finally:
        # a stopped rank only goes with SIGKILL, and outlives a launcher that has already exited
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        if victim is not None:  # the ranks run in a session of their own
            with contextlib.suppress(ProcessLookupError):
                os.kill(victim, signal.SIGKILL)
        process.wait()
    assert any(said in line.lower() for line in lines), "".join(lines)[-3000:]
    assert not (tmp_path / "models").exists()


def _wait_for_rank(launcher: int, rank: int) -> int:
    """The PID of the launcher's child that runs `rank` (its RANK in the environment)."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
                environ = (entry / "environ").read_bytes().split(b"\0")
            except (OSError, IndexError, ValueError):
                continue
            if ppid == launcher and f"RANK={rank}".encode() in environ:
                return int(entry.name)
        time.sleep(0.2)
    raise AssertionError(f"rank {rank} never started")
