"""Training on several processes with `torchrun` and torch.distributed (DistributedDataParallel).

`torchrun --standalone --nproc_per_node=N -m training train ...` starts N copies of the same
command; each reads RANK / WORLD_SIZE from its environment and joins one process group (gloo on
CPU, nccl on GPU: one device per rank, `LOCAL_RANK`'s). In memory, every rank prepares the same
data and draws the same shuffled order and negatives (one seed), then trains on its own slice of
each global batch: rank r takes rows r, r + N, r + 2N, ... of the shuffled events, so every rank
runs the same number of batches and the ranks together see exactly the global batches one
process would (DESIGN: a batch of `optim.batch_size` events). From a prepared folder, each rank
streams its own slice of the shards instead (training.data.stream).
Validation predicts a slice per rank and gathers every prediction before any AUC is computed;
only rank 0 writes checkpoints, reports and the artifact. A collective that waits longer than
`optim.collective_timeout_s` for a rank (dead, hung) ends the run with an error.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from typing import TypeVar

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

from training.config import ConfigError

T = TypeVar("T")


@dataclass(frozen=True)
class Ranks:
    """This process's place in the run: rank `rank` of `world` (one process: 0 of 1)."""

    rank: int = 0
    world: int = 1
    device: str = "cpu"  # where this rank trains: cpu, or cuda:<LOCAL_RANK>

    @property
    def main(self) -> bool:
        """Rank 0: the one that writes."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world > 1


ALONE = Ranks()  # one process


def start(timeout_s: float, device: str = "auto") -> Ranks:
    """Join the process group `torchrun` set up in the environment, or run alone; train on the
    GPU (`device` cuda, or auto with one visible), one per rank, with nccl, else on the CPU with
    gloo.

    Raises:
        ConfigError: WORLD_SIZE or LOCAL_RANK is not a number, or `device` is cuda without a GPU.
    """
    try:
        world = int(os.environ.get("WORLD_SIZE", "1"))
        local = int(os.environ.get("LOCAL_RANK", "0"))
    except ValueError:
        raise ConfigError(
            f"WORLD_SIZE={os.environ.get('WORLD_SIZE')!r} / LOCAL_RANK="
            f"{os.environ.get('LOCAL_RANK')!r}: not numbers"
        ) from None
    if device == "cuda" and not torch.cuda.is_available():
        raise ConfigError("optim.device=cuda but torch sees no GPU (use auto or cpu)")
    gpu = device == "cuda" or (device == "auto" and torch.cuda.is_available())
    where = f"cuda:{local}" if gpu else "cpu"
    if gpu:
        torch.cuda.set_device(local)
    if world <= 1:
        return Ranks(device=where)
    dist.init_process_group("nccl" if gpu else "gloo", timeout=timedelta(seconds=timeout_s))
    return Ranks(dist.get_rank(), dist.get_world_size(), where)


def stop(ranks: Ranks) -> None:
    """Leave the process group (every rank, after the last collective)."""
    if ranks.distributed and dist.is_initialized():
        dist.destroy_process_group()


@contextmanager
def main_first(ranks: Ranks) -> Iterator[None]:
    """Rank 0 runs the block first, the others after it (they then read what it cached: the
    MovieLens wheel, text embeddings), so no two processes write one cache file at once."""
    if ranks.distributed and not ranks.main:
        dist.barrier()
    yield
    if ranks.distributed and ranks.main:
        dist.barrier()


def rank_rows(order: np.ndarray, ranks: Ranks) -> np.ndarray:
    """This rank's rows of `order`: every world-th one from its rank on, of the first
    len - len % world rows, so every rank gets the same count (the fewer than `world` rows left
    over change with each epoch's shuffle) and the ranks' rows are disjoint."""
    usable = len(order) - len(order) % ranks.world
    return order[ranks.rank : usable : ranks.world]


def average_gradients(parameters: Iterable[nn.Parameter], ranks: Ranks) -> None:
    """Average the gradients of parameters DDP does not own (the learned loss weights)."""
    if not ranks.distributed:
        return
    for p in parameters:
        if p.grad is not None:
            dist.all_reduce(p.grad)
            p.grad /= ranks.world


def sum_over_ranks(values: Sequence[float], ranks: Ranks) -> list[float]:
    """Element-wise sums over every rank (float64)."""
    if not ranks.distributed:
        return list(values)
    total = torch.tensor(list(values), dtype=torch.float64, device=ranks.device)
    dist.all_reduce(total)  # nccl reduces tensors on the rank's GPU only
    return [float(v) for v in total]


def all_objects(mine: T, ranks: Ranks) -> list[T]:
    """Every rank's `mine`, in rank order (one process: [mine])."""
    if not ranks.distributed:
        return [mine]
    parts: list[T | None] = [None] * ranks.world
    dist.all_gather_object(parts, mine)
    return [p for p in parts if p is not None]


def gather_rows(mine: dict[str, np.ndarray], n_rows: int, ranks: Ranks) -> dict[str, np.ndarray]:
    """Every rank's rows, back in their places: rank r computed rows r, r + world, ... of
    `n_rows` (each array's first axis)."""
    if not ranks.distributed:
        return mine
    parts = all_objects(mine, ranks)
    rows = np.arange(n_rows)
    out: dict[str, np.ndarray] = {}
    for name, first in mine.items():
        out[name] = np.empty((n_rows, *first.shape[1:]), dtype=first.dtype)
        for rank, part in enumerate(parts):
            out[name][rows[rank :: ranks.world]] = part[name]
    return out
