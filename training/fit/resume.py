"""`train --resume STATE`: the training state written after every epoch, read back to go on.

After each epoch rank 0 writes `reports/<name>/training-state.pt` (replaced in one rename, so a
run killed while writing leaves the previous one): the model, the optimiser, the loss weights,
the epoch, the history and best epoch so far, the numpy generator (shuffles and negatives) and
every rank's torch generator (dropout). Streaming a prepared folder, it is also written every
`optim.state_every_batches` batches with the data position (the batches of the epoch done and
their loss sums): the stream of an epoch is a function of its seed, so a resumed run skips to
that batch and goes on with the very batches it would have seen. A run resumed from a state
ends with exactly the figures of a run that was never stopped (CPU;
tests/training/test_resume.py). The run's config and data source must be the ones the state
was written with, except the number of epochs, the patience and how often states are written
(so a finished run can be given more epochs).
"""

from __future__ import annotations

import os
import pickle
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import torch

from training.config import ConfigError

STATE_FILE = "training-state.pt"
MAY_CHANGE = {("optim", "epochs"), ("optim", "patience"), ("optim", "state_every_batches")}


@dataclass
class TrainingState:
    """Everything `fit` needs to continue after `epoch`."""

    epoch: int
    epochs: list[dict[str, float]]  # the history's figures per epoch
    best_epoch: int
    best: float | None
    best_model: dict[str, Any]
    model: dict[str, Any]
    optimizer: dict[str, Any]
    weighting: dict[str, Any]
    numpy_rng: dict[str, Any]
    torch_rng: list[torch.Tensor]  # one per rank
    config: dict[str, Any]  # the run's config and data source
    # a streamed epoch stopped part-way (optim.state_every_batches): batches of epoch + 1 done
    # and their loss sums; 0 and {} at an epoch's end
    batch: int = 0
    partial: dict[str, float] = field(default_factory=dict)


def save(path: Path, state: TrainingState) -> None:
    """Write `state` to `path` in one rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.partial")
    # the fields as they are: dataclasses.asdict would deep-copy every tensor first (a second
    # copy of the model, its best copy and the optimiser, ~5 x the embedding tables)
    torch.save({f.name: getattr(state, f.name) for f in fields(state)}, partial)
    os.replace(partial, path)


def load(path: Path, config: dict[str, Any], world: int) -> TrainingState:
    """Read a state and check it belongs to this run.

    Raises:
        ConfigError: no such file, not a training state, another config or data source (each
            differing key named), or another number of ranks.
    """
    try:
        raw = torch.load(path, map_location="cpu", weights_only=True)
        state = TrainingState(**raw)
    except FileNotFoundError:
        raise ConfigError(f"--resume {path}: no such file") from None
    except (OSError, RuntimeError, TypeError, EOFError, pickle.UnpicklingError) as e:
        raise ConfigError(f"--resume {path}: not a training state ({e})") from None
    before, now = _flat(state.config), _flat(config)
    differ = sorted(
        k for k in before.keys() | now.keys() if k not in MAY_CHANGE and before.get(k) != now.get(k)
    )
    if differ:
        raise ConfigError(
            f"--resume {path}: written by a run with another config or data; differs in "
            f"{', '.join('.'.join(k) for k in differ)}"
        )
    if len(state.torch_rng) != world:
        raise ConfigError(
            f"--resume {path}: written by {len(state.torch_rng)} rank(s), this run has {world}"
        )
    return state


def _flat(config: dict[str, Any]) -> dict[tuple[str, ...], str]:
    """(section, key) -> the value's text, comparable across a save and a load."""
    out: dict[tuple[str, ...], str] = {}
    for key, value in config.items():
        if isinstance(value, dict):
            out |= {(key, k): repr(v) for k, v in value.items()}
        else:
            out[(key,)] = repr(value)
    return out
