"""The Python side of `prepare` (training.data.prepare): the sorted log read back in batches of
whole users, split and sampled with the in-memory path's functions, written as sample shards
(their columns: `sample_schema`)."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from tqdm import tqdm

from service.artifact import TaskSpec
from training.data.labels import Labels, item_labels
from training.data.log_sql import READ_ROWS
from training.data.raw import DataError
from training.data.split import (
    COLD,
    TRAIN,
    split_parts,
    windows,
)


@dataclass
class ShardWriter:
    """Reads the sorted log back in batches of whole users and writes the sample shards, the
    evaluation users' sequences and the trained-id counts."""

    out: Path
    tasks: Sequence[TaskSpec]
    length: int
    n_items: int
    profile: dict[str, Labels]
    holdout: np.ndarray
    evaluated: np.ndarray
    shard_events: int
    subdir: str = "samples"  # where the shards go
    whole: bool = False  # the refit's: every event a training event, no evaluation users
    shards: list[dict[str, Any]] = field(init=False)
    n_rows: int = field(init=False)
    trained_items: np.ndarray = field(init=False)
    trained_users: np.ndarray = field(init=False)
    schema: pa.Schema = field(init=False)
    _pending: list[pa.Table] = field(init=False)
    _seen: list[np.ndarray] = field(init=False)
    _eval: list[dict[str, np.ndarray]] = field(init=False)

    def __post_init__(self) -> None:
        self.trained_items = np.zeros(self.n_items, dtype=np.int64)
        self.trained_users = np.zeros(len(self.holdout), dtype=np.int64)
        self.schema = sample_schema(self.tasks, self.length, self.profile)
        self.shards, self.n_rows, self._pending, self._seen, self._eval = [], 0, [], [], []
        (self.out / self.subdir).mkdir(parents=True, exist_ok=True)

    def write(self, sorted_log: Path, progress: bool) -> None:
        file = pq.ParquetFile(sorted_log)
        bar = tqdm(total=file.metadata.num_rows, desc="prepare", unit="row", disable=not progress)
        base = 0
        for warm, cold in _whole_users(file, min(READ_ROWS, self.shard_events)):
            if warm is not None:
                self._warm(warm, base)
                base += len(warm["user"])
                self.n_rows += len(warm["user"])
                bar.update(len(warm["user"]))
            if cold is not None:
                keep = self.evaluated[cold["user"]]
                n = len(cold["user"])
                self._eval.append(
                    {k: v[keep] for k, v in cold.items()}
                    | {
                        "position": np.zeros(int(keep.sum()), dtype=np.int64),
                        "part": np.full(int(keep.sum()), COLD, dtype=np.int8),
                    }
                )
                self.n_rows += n
                bar.update(n)
        bar.close()
        self._flush()
        if not self.shards:
            raise DataError("the log has no training event (every user has fewer than 3 items?)")
        if self.whole:
            return
        merged: dict[str, Any] = (
            {k: np.concatenate([part[k] for part in self._eval]) for k in self._eval[0]}
            if self._eval
            else {}
        )
        np.savez(self.out / "eval.npz", **merged)

    def _warm(self, rows: dict[str, np.ndarray], base: int) -> None:
        user, item = rows["user"], rows["item"]
        position, part = split_parts(user)
        if self.whole:
            part = np.full_like(part, TRAIN)
        train = np.flatnonzero(part == TRAIN)
        self.trained_items += np.bincount(item[train], minlength=self.n_items)
        per_user = np.bincount(user[train], minlength=len(self.holdout))
        self.trained_users += per_user
        columns: dict[str, Any] = {
            "event": base + train,
            "user": user[train].astype(np.int32),
            "item": item[train].astype(np.int32),
            "position": position[train].astype(np.int32),
            "count": per_user[user[train]].astype(np.int32),
            "history": _fixed(windows(item, position, train, self.length).astype(np.int32)),
        }
        frame = pd.DataFrame(
            {k.removeprefix("label:"): v for k, v in rows.items() if k.startswith("label:")}
        )
        for task in self.tasks:
            if task.level == "item" and task.column:
                known = item_labels(task, frame)
                columns[f"label_{task.name}"] = known.values[train]
                columns[f"mask_{task.name}"] = known.mask[train]
            elif task.level == "user":
                known, who = self.profile[task.name], user[train]
                values = known.values[who]
                columns[f"label_{task.name}"] = _fixed(values) if values.ndim == 2 else values
                columns[f"mask_{task.name}"] = known.mask[who] & ~self.holdout[who]
        self._pending.append(pa.table(columns, schema=self.schema))
        self._seen.append(np.unique(user.astype(np.int64) * self.n_items + item))
        keep = self.evaluated[user]
        self._eval.append(
            {"user": user[keep], "item": item[keep], "position": position[keep], "part": part[keep]}
            | {k: v[keep] for k, v in rows.items() if k.startswith("label:")}
        )
        if sum(t.num_rows for t in self._pending) >= self.shard_events:
            self._flush()

    def _flush(self) -> None:
        rows = sum(t.num_rows for t in self._pending)
        if not rows:
            return
        n = len(self.shards)
        samples, seen = f"{self.subdir}/part-{n:05d}.parquet", f"{self.subdir}/seen-{n:05d}.parquet"
        pq.write_table(pa.concat_tables(self._pending), self.out / samples, compression="zstd")
        keys = np.concatenate(self._seen)
        pq.write_table(pa.table({"key": keys}), self.out / seen, compression="zstd")
        self.shards.append({"file": samples, "rows": rows, "seen": seen, "pairs": len(keys)})
        self._pending, self._seen = [], []


def sample_schema(tasks: Sequence[TaskSpec], length: int, profile: dict[str, Labels]) -> pa.Schema:
    """The columns of a sample shard (see the module docstring)."""
    columns = [
        ("event", pa.int64()),
        ("user", pa.int32()),
        ("item", pa.int32()),
        ("position", pa.int32()),
        ("count", pa.int32()),
        ("history", pa.list_(pa.field("element", pa.int32()), length)),
    ]
    for task in tasks:
        if task.level == "item" and task.column:
            columns += [(f"label_{task.name}", pa.float32()), (f"mask_{task.name}", pa.bool_())]
        elif task.level == "user":
            values = profile[task.name].values
            kind = (
                pa.list_(pa.field("element", pa.float32()), values.shape[1])
                if values.ndim == 2
                else pa.from_numpy_dtype(values.dtype)
            )
            columns += [(f"label_{task.name}", kind), (f"mask_{task.name}", pa.bool_())]
    return pa.schema(columns)


def _fixed(values: np.ndarray) -> pa.FixedSizeListArray:
    """A [R, K] array as a fixed-size list column."""
    return pa.FixedSizeListArray.from_arrays(pa.array(values.reshape(-1)), values.shape[1])


def _whole_users(
    file: pq.ParquetFile, rows_per_batch: int
) -> Iterator[tuple[dict[str, np.ndarray] | None, dict[str, np.ndarray] | None]]:
    """(warm rows of whole users, cold rows) per batch of the sorted log: the warm rows of the
    batch's last user wait for the next batch, which may hold more of them."""
    pending: dict[str, np.ndarray] | None = None
    for batch in file.iter_batches(batch_size=rows_per_batch):
        rows = {
            name: batch.column(name).to_numpy(zero_copy_only=False) for name in batch.schema.names
        }
        is_cold = rows.pop("cold").astype(bool)
        warm = {k: v[~is_cold] for k, v in rows.items()}
        cold = {k: v[is_cold] for k, v in rows.items()} if is_cold.any() else None
        if pending is not None:
            warm = {k: np.concatenate([pending[k], warm[k]]) for k in warm}
        if cold is None and len(warm["user"]):
            last = np.searchsorted(warm["user"], warm["user"][-1])  # the last user's first row
            pending = {k: v[last:] for k, v in warm.items()}
            warm = {k: v[:last] for k, v in warm.items()}
        else:
            pending = None
        yield (warm if len(warm["user"]) else None), cold
    if pending is not None and len(pending["user"]):
        yield pending, None
