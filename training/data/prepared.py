"""A folder written by `prepare` (training.data.prepare), read back for `train --data PREP`.

Everything is checked before any training starts: the manifest's format, the config it was
prepared with (the tasks, features, history length and evaluation protocol must be this run's),
every shard present with its row count and the manifest's schema. The evaluation users'
sequences become the `Log` the validation, test and cold-item sets are drawn from, exactly as
the in-memory path draws them; the training events stay on disk and are streamed
(training.data.stream).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from service.artifact import TaskSpec, read_vocab
from training.config import Config, ConfigError
from training.data.labels import Labels, item_labels
from training.data.prepare import FORMAT, MANIFEST, prepared_config, schema_hash
from training.data.raw import DataError
from training.data.split import Log
from training.data.vocab import Vocab


@dataclass(frozen=True)
class PreparedFolder:
    """What training reads from a prepared folder."""

    tasks: tuple[TaskSpec, ...]
    vocabs: dict[str, Vocab]
    log: Log  # the evaluation users' sequences, with the whole log's trained ids
    items: pd.DataFrame  # the items table (item content)
    shards: Shards
    # the refit's shards and trained (items, users) ids; None: prepared with --no-refit
    refit: tuple[Shards, tuple[np.ndarray, np.ndarray]] | None = None


def open_prepared(folder: Path, cfg: Config) -> PreparedFolder:
    """Read a prepared folder for a run with `cfg`.

    Raises:
        DataError: a missing or damaged part of the folder.
        ConfigError: the folder was prepared with another config (each differing key named).
    """
    manifest = read_manifest(folder)
    before, now = manifest["config"], prepared_config(cfg)
    differ = sorted(k for k in before.keys() | now.keys() if before.get(k) != now.get(k))
    if differ:
        raise ConfigError(
            f"{folder} was prepared with another config; differs in {', '.join(differ)} "
            "(prepare again with this config, or train with the one it was prepared with)"
        )
    shards = Shards.open(folder, manifest["shards"], manifest["schema_sha256"])
    whole = manifest["refit"]
    refit_shards = (
        None if whole is None else Shards.open(folder, whole["shards"], manifest["schema_sha256"])
    )
    tasks = tuple(TaskSpec.model_validate(t) for t in manifest["tasks"])
    try:
        vocabs = {
            k: Vocab(tuple(read_vocab(folder / "vocab" / f"{k}.txt")))
            for k in ("user_id", "item_id")
        }
        items = pd.read_parquet(folder / "items.parquet")
        with (
            np.load(folder / "eval.npz") as e,
            np.load(folder / "profile.npz") as p,
            np.load(folder / "ids.npz") as ids,
        ):
            log = _log(dict(e), dict(p), dict(ids), tasks, manifest)
            refit = (
                None
                if refit_shards is None
                else (refit_shards, (ids["refit_trained_items"], ids["refit_trained_users"]))
            )
    except (OSError, KeyError, ValueError) as e:
        raise DataError(f"{folder}: damaged ({e}); run prepare again") from None
    return PreparedFolder(tasks, vocabs, log, items, shards, refit)


def _log(
    rows: dict[str, np.ndarray],
    profile: dict[str, np.ndarray],
    ids: dict[str, np.ndarray],
    tasks: tuple[TaskSpec, ...],
    manifest: dict[str, Any],
) -> Log:
    n_items = int(manifest["n_items"])
    user, item = rows["user"].astype(np.int64), rows["item"].astype(np.int64)
    labels = pd.DataFrame(
        {k.removeprefix("label:"): v for k, v in rows.items() if k.startswith("label:")}
    )
    return Log(
        user=user,
        item=item,
        position=rows["position"].astype(np.int64),
        part=rows["part"].astype(np.int8),
        item_labels={
            t.name: item_labels(t, labels) for t in tasks if t.level == "item" and t.column
        },
        user_labels={
            t.name: Labels(profile[f"label_{t.name}"], profile[f"mask_{t.name}"])
            for t in tasks
            if t.level == "user"
        },
        holdout=profile["holdout"],
        n_users=int(manifest["n_users"]),
        n_items=n_items,
        pair_keys=np.unique(user * n_items + item),
        cold_items=ids["cold_items"],
        trained_ids=(ids["trained_items"], ids["trained_users"]),
    )


def read_manifest(folder: Path) -> dict[str, Any]:
    """The manifest of a prepared folder.

    Raises:
        DataError: missing, unreadable or of another format.
    """
    path = folder / MANIFEST
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DataError(f"{folder}: no {MANIFEST}; is it a folder written by prepare?") from None
    except (OSError, ValueError) as e:
        raise DataError(f"{path}: unreadable ({e})") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise DataError(f"{path}: not a format-{FORMAT} prepared manifest; run prepare again")
    return manifest


@dataclass(frozen=True)
class Shards:
    """A prepared folder's sample shards, checked against its manifest."""

    folder: Path
    files: tuple[str, ...]
    seen: tuple[str, ...]
    rows: tuple[int, ...]

    @classmethod
    def open(cls, folder: Path, entries: list[dict[str, Any]], schema_sha256: str) -> Shards:
        """Check the shards a manifest lists (`entries`) against it.

        Raises:
            DataError: a missing or unreadable shard, or one whose row count or schema is not
                the manifest's.
        """
        files, seen, rows = [], [], []
        for shard in entries:
            for name in (shard["file"], shard["seen"]):
                if not (folder / name).is_file():
                    raise DataError(f"{folder}: shard {name} is missing (run prepare again)")
            try:
                with pq.ParquetFile(folder / shard["file"]) as parquet:
                    schema, n_rows = parquet.schema_arrow, parquet.metadata.num_rows
            except (OSError, ValueError) as e:
                raise DataError(f"{folder / shard['file']}: unreadable ({e})") from None
            if schema_hash(schema) != schema_sha256:
                raise DataError(
                    f"{folder / shard['file']}: its schema differs from the manifest's "
                    f"(written by another prepare?):\n{schema}"
                )
            if n_rows != shard["rows"]:
                raise DataError(
                    f"{folder / shard['file']}: {n_rows} rows, the manifest says {shard['rows']}"
                )
            files.append(shard["file"])
            seen.append(shard["seen"])
            rows.append(shard["rows"])
        return cls(folder, tuple(files), tuple(seen), tuple(rows))

    @property
    def n_rows(self) -> int:
        return sum(self.rows)

    def read(self, start: int, stop: int) -> Iterator[tuple[dict[str, np.ndarray], np.ndarray]]:
        """The events [start, stop) of the concatenated shards, one shard's part at a time, each
        with its shard's seen pair keys."""
        offsets = np.cumsum((0, *self.rows))
        for k, (first, end) in enumerate(zip(offsets[:-1], offsets[1:], strict=True)):
            lo, hi = max(start, first), min(stop, end)
            if lo >= hi:
                continue
            table = pq.read_table(self.folder / self.files[k]).slice(lo - first, hi - lo)
            columns = {}
            for name in table.column_names:
                column = table.column(name).combine_chunks()
                if pa.types.is_fixed_size_list(column.type):  # [rows, K]
                    values = column.flatten().to_numpy(zero_copy_only=False)
                    columns[name] = values.reshape(len(column), column.type.list_size)
                else:
                    columns[name] = column.to_numpy(zero_copy_only=False)
            keys = pq.read_table(self.folder / self.seen[k]).column("key").to_numpy()
            yield columns, keys
