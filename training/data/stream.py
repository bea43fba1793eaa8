"""The sample shards of a prepared folder (`training.data.prepare`), streamed into training.

`SampleStream` is the `IterableDataset` a
DataLoader runs: each (rank, DataLoader worker) reads its own slice of the training events,
disjoint from every other and of the same size, m = R // K rows for K slices of R events, so
every rank runs the same number of batches and no collective waits on a rank with more. The
slices are contiguous runs of the events from a per-epoch random offset (the R % K events left
over change with each epoch), read one shard at a time; each run is shuffled through a buffer of
`optim.shuffle_buffer` events with a per-epoch, per-slice seed. Negatives are drawn as the shard
is read, from the trained items its users never touched (the shard's `seen` pairs); profile
labels go to about `optim.user_task_events` random windows per user and epoch, each eligible
window with probability n / (the user's eligible windows), since a user's events may fall in two
slices. `start` skips the first batches of an epoch, so a run resumes where it stopped.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from service.artifact import TaskSpec
from training.data.prepared import Shards
from training.data.raw import DataError
from training.data.samples import Batch, draw_negatives, to_batch


@dataclass(frozen=True)
class StreamArgs:
    """What every slice of an epoch is drawn with."""

    tasks: tuple[TaskSpec, ...]
    batch_size: int  # events per batch of one rank
    n_negatives: int
    user_task_events: int  # 0: every window carries its profile labels
    history_length: int
    shuffle_buffer: int
    seed: int
    pool: np.ndarray  # items negatives are drawn from (those with training events)
    n_items: int


def slice_bounds(n_rows: int, n_slices: int, k: int, offset: int) -> tuple[np.ndarray, int]:
    """(row ranges [[start, stop), ...], m): slice k of n_slices equal slices of the n_rows
    events, a contiguous run from `offset` (wrapping around), m = n_rows // n_slices rows.

    Raises:
        DataError: more slices than events (a slice would be empty).
    """
    m = n_rows // n_slices
    if m == 0:
        raise DataError(
            f"{n_slices} (rank, worker) slices but only {n_rows} training events: use fewer "
            "ranks or optim.loader_workers, or more data"
        )
    start = (offset + k * m) % n_rows
    if start + m <= n_rows:
        return np.array([[start, start + m]]), m
    return np.array([[start, n_rows], [0, start + m - n_rows]]), m


def batches_per_slice(n_rows: int, n_slices: int, batch_size: int) -> int:
    return -(-(n_rows // n_slices) // batch_size)


class SampleStream(IterableDataset[Batch]):
    """The batches of one epoch for one rank (and each of its DataLoader workers)."""

    def __init__(
        self,
        shards: Shards,
        args: StreamArgs,
        epoch: int,
        rank: int = 0,
        world: int = 1,
        workers: int = 0,
        start: int = 0,
    ) -> None:
        super().__init__()
        self.shards, self.args, self.epoch = shards, args, epoch
        self.rank, self.world, self.start = rank, world, start
        self.loader_workers, self.workers = workers, max(1, workers)  # slices per rank
        self.n_slices = world * self.workers
        slice_bounds(shards.n_rows, self.n_slices, 0, 0)  # too many slices: fail here, early

    def __len__(self) -> int:
        """Batches this rank runs in the epoch (every worker's together)."""
        per = batches_per_slice(self.shards.n_rows, self.n_slices, self.args.batch_size)
        return per * self.workers

    def __iter__(self) -> Iterator[Batch]:
        info = get_worker_info()
        for rows in self.events(0 if info is None else info.id):
            yield self._batch(rows)

    def events(self, worker: int) -> Iterator[dict[str, np.ndarray]]:
        """The rows of each batch of one worker's slice, from `start` on: the shards' columns
        (`event` the flat event index), `negatives` [B, n] and `labelled` [B]."""
        k = self.rank * self.workers + worker
        offset = int(np.random.default_rng([self.args.seed, self.epoch]).integers(2**62))
        ranges, _ = slice_bounds(self.shards.n_rows, self.n_slices, k, offset % self.shards.n_rows)
        rng = np.random.default_rng([self.args.seed, self.epoch, k])
        # batch j of this rank comes from worker j % workers: skip this worker's share of `start`
        skip = max(0, -(-(self.start - worker) // self.workers))
        for n, rows in enumerate(self._shuffled(ranges, rng)):
            if n >= skip:
                yield rows

    def _shuffled(
        self, ranges: np.ndarray, rng: np.random.Generator
    ) -> Iterator[dict[str, np.ndarray]]:
        """Batches of rows: the slice's events through a shuffle buffer."""
        size, limit = self.args.batch_size, self.args.shuffle_buffer
        buffer: dict[str, np.ndarray] | None = None
        for start, stop in ranges:
            for columns, keys in self.shards.read(int(start), int(stop)):
                piece = self._drawn(columns, keys, rng)
                buffer = (
                    piece
                    if buffer is None
                    else {k: np.concatenate([buffer[k], piece[k]]) for k in buffer}
                )
                while len(buffer["user"]) >= limit + size:
                    chosen = rng.choice(len(buffer["user"]), size=size, replace=False)
                    keep = np.ones(len(buffer["user"]), dtype=bool)
                    keep[chosen] = False
                    yield {k: v[chosen] for k, v in buffer.items()}
                    buffer = {k: v[keep] for k, v in buffer.items()}
        if buffer is None:
            return
        order = rng.permutation(len(buffer["user"]))
        for first in range(0, len(order), size):
            rows = order[first : first + size]
            yield {k: v[rows] for k, v in buffer.items()}

    def _drawn(
        self, columns: dict[str, np.ndarray], keys: np.ndarray, rng: np.random.Generator
    ) -> dict[str, np.ndarray]:
        """One shard's events with their negatives and which carry profile labels."""
        a = self.args
        users = columns["user"].astype(np.int64)
        columns["negatives"] = draw_negatives(users, a.n_negatives, a.pool, keys, a.n_items, rng)
        n = a.user_task_events
        if n:
            count, position = columns["count"], columns["position"]
            floor = np.maximum(0, np.minimum(a.history_length, count - n))
            eligible = position >= floor
            chance = np.minimum(1.0, n / np.maximum(1, count - floor))
            columns["labelled"] = eligible & (rng.random(len(users)) < chance)
        else:
            columns["labelled"] = np.ones(len(users), dtype=bool)
        return columns

    def _batch(self, rows: dict[str, np.ndarray]) -> Batch:
        known: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        for task in self.args.tasks:
            if not task.interaction:
                mask = rows[f"mask_{task.name}"]
                if task.level == "user":
                    mask = mask & rows["labelled"]
                known[task.name] = rows[f"label_{task.name}"], mask
        candidates = np.concatenate([rows["item"][:, None], rows["negatives"]], axis=1)
        return to_batch(rows["user"], rows["history"], candidates, self.args.tasks, known)


def loader(stream: SampleStream) -> DataLoader[Batch]:
    """A DataLoader over `stream`'s workers (in this process with none), batches as they are."""
    # its own generator: creating the loader draws a worker seed, which must not move the
    # global torch generator (dropout), or a run resumed within an epoch would diverge
    generator = torch.Generator().manual_seed(0)
    return DataLoader(
        stream, batch_size=None, num_workers=stream.loader_workers, generator=generator
    )
