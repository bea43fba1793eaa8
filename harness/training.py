"""Training runs in subprocesses, as a user starts them: `python -m training` and `torchrun`."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

TORCHRUN = Path(sys.executable).with_name("torchrun")
# The planted synthetic log of tests/conftest.py learning_config, as command-line flags
# (tests/training/test_distributed.py, bench/parity.py).
LEARNING = [
    '--features=[{"column": "genres", "kind": "multi_categorical"},'
    ' {"column": "year", "kind": "numeric"}]',
    "--synthetic.n_users=500",
    "--synthetic.n_items=200",
    "--network.d_embedding=32",
    "--network.d_hidden=32",
    "--network.d_tower=16",
    "--network.history_length=20",
    "--optim.epochs=4",
    "--optim.user_task_events=8",
    "--optim.batch_size=64",
    "--optim.lr=0.003",
    "--eval.n_rank_negatives=50",
    "--eval.n_cold_rank_negatives=20",
]


def training_cli(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    """`python -m training ARGS` in a subprocess (one thread), its output captured."""
    return subprocess.run(
        [sys.executable, "-m", "training", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=900,
        env=os.environ | {"OMP_NUM_THREADS": "1"},
    )
