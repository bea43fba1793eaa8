"""`python -m training prepare --data DIR --out PREP`: a log of any size made ready to stream.

DuckDB does what needs the whole log at once, out of core under `--memory-limit` (it spills to
`PREP/.tmp`): it validates every interaction (file and row of each problem), joins the ids to
their vocabulary indices, counts the items for the cold-item pick and sorts the log by (cold,
user, timestamp, item id), ties in file order, as the in-memory path sorts it. pyarrow then reads
the sorted log back in row batches, cut at user boundaries, and numpy turns each batch of whole
users into the protocol's split and samples with the very functions of the in-memory path
(`training.data.split`), so both give the same samples for the same input. pyarrow alone has no
out-of-core sort or join; DuckDB does both under a memory limit with one SQL statement each.

Layout of PREP (`prepared.json` lists it, with the row counts and the sample schema's hash):
- `samples/part-NNNNN.parquet`: the training events of whole users, user-ordered: flat event
  index, user, item (the positive), position, the user's training-event count, `history` (the L
  items before it, int32, 0 = padding) and per task `label_<task>` / `mask_<task>` (profile
  labels of holdout users already masked); `samples/seen-NNNNN.parquet`: every (user, item) pair
  of that shard's users, so negatives are drawn from what they never touched;
- `eval.npz`: the whole sequences of the evaluation users (`eval.max_users`, 0 = all), from which
  validation, test and cold-item sets are drawn exactly as in memory;
- `refit/part-NNNNN.parquet`, `refit/seen-NNNNN.parquet`: the same for the refit
  (training.fit.refit): every interaction a training event in its user's whole sequence (validation,
  test and cold-item ones too), no profile label masked; left out by `prepare --no-refit`;
- `profile.npz` (per user index: task labels, holdout), `ids.npz` (trained items and users, cold
  items; the refit's trained items and users), `vocab/{user_id,item_id}.txt`, `items.parquet`
  (the items table, for item content).
"""

from __future__ import annotations

import hashlib
import json
import shutil
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa

from training.config import BUILT_IN_SOURCES, Config, model_name
from training.data.directory import read_one
from training.data.log_sql import (
    Scan,
    item_counts,
    numeric_label_columns,
    register_vocabs,
    sort_log,
)
from training.data.raw import DataError, RawTable
from training.data.shard_writer import ShardWriter
from training.data.split import (
    evaluation_users,
    fold_of,
    pick_cold_items,
    user_profiles,
)
from training.data.tables import parse_tables
from training.data.vocab import Vocab, resolve_tasks

MANIFEST = "prepared.json"
FORMAT = 2  # 2: the refit's shards
SHARD_EVENTS = 250_000  # training events per sample shard (about: whole users)


def prepared_config(cfg: Config) -> dict[str, Any]:
    """The config keys a prepared folder is made for: `train --data PREP` must use the same."""
    out = cfg.to_dict()
    return {
        "tasks": out["tasks"],
        "features": out["features"],
        "network.history_length": cfg.network.history_length,
        **{f"eval.{k}": v for k, v in out["eval"].items()},
    }


def is_prepared(source: str) -> bool:
    """Whether `source` is a folder written by `prepare`."""
    return (Path(source) / MANIFEST).is_file()


def prepare_folder(
    cfg: Config,
    source: str,
    out: Path,
    memory_limit: str = "4GB",
    shard_events: int = SHARD_EVENTS,
    progress: bool = True,
    refit: bool = True,
) -> dict[str, Any]:
    """Prepare `source` (a data folder, or `movielens` / `synthetic`) into `out`; the manifest.
    With `refit`, also the refit's shards (every interaction a training event).

    Raises:
        DataError: the input is invalid (every problem named), or `out` holds other files.
        ConfigError: a data folder without a model name.
    """
    import duckdb

    name = model_name(cfg, source)
    _claim(out)
    tmp = out / ".tmp"
    tmp.mkdir(parents=True, exist_ok=True)
    folder = _built_in(cfg, source, tmp) if source in BUILT_IN_SOURCES else Path(source)
    con = duckdb.connect(config={"memory_limit": memory_limit, "temp_directory": str(tmp)})
    try:
        scan = Scan.open(con, folder)
        tables = parse_tables(
            {
                "interactions": RawTable(pd.DataFrame(columns=scan.columns), scan.file),
                "users": read_one(folder, "users"),
                "items": read_one(folder, "items"),
            },
            cfg.tasks,
            cfg.features,
        )
        tasks = resolve_tasks(cfg.tasks, tables)
        users, items = Vocab.build(tables.users["user_id"]), Vocab.build(tables.items["item_id"])
        label_columns = numeric_label_columns(tasks, scan.columns)
        register_vocabs(con, users, items)
        scan.validate(con, label_columns)
        counts = item_counts(con, items)
        cold_items = pick_cold_items(
            counts, cfg.eval.cold_item_fraction, cfg.eval.cold_item_min_interactions, cfg.eval.seed
        )
        sorted_log, sorted_whole = tmp / "sorted.parquet", tmp / "sorted-whole.parquet"
        sort_log(con, cold_items, label_columns, sorted_log)
        if refit:  # no item is cold there: every interaction in its user's sequence
            sort_log(con, np.zeros_like(cold_items), label_columns, sorted_whole)
    except duckdb.Error as e:
        raise DataError(f"{folder}: interactions unreadable ({e})") from None
    finally:
        con.close()
    profile, holdout = user_profiles(
        tables.users, users, tasks, cfg.eval.holdout_fraction, cfg.eval.seed, fold_of(cfg.eval)
    )
    writer = ShardWriter(
        out=out,
        tasks=tasks,
        length=cfg.network.history_length,
        n_items=items.size,
        profile=profile,
        holdout=holdout,
        evaluated=evaluation_users(users.size, cfg.eval.max_users, cfg.eval.seed),
        shard_events=shard_events,
    )
    writer.write(sorted_log, progress)
    whole = None
    if refit:
        whole = replace(
            writer,
            holdout=np.zeros_like(holdout),
            evaluated=np.zeros_like(writer.evaluated),
            subdir="refit",
            whole=True,
        )
        whole.write(sorted_whole, progress)
    users.save(out / "vocab" / "user_id.txt")
    items.save(out / "vocab" / "item_id.txt")
    tables.items.to_parquet(out / "items.parquet", index=False)
    arrays: dict[str, Any] = {"holdout": holdout}
    arrays |= {f"label_{k}": v.values for k, v in profile.items()}
    arrays |= {f"mask_{k}": v.mask for k, v in profile.items()}
    np.savez(out / "profile.npz", **arrays)
    ids: dict[str, Any] = {
        "trained_items": writer.trained_items > 0,
        "trained_users": writer.trained_users > 0,
        "cold_items": cold_items,
    }
    if whole is not None:
        ids |= {
            "refit_trained_items": whole.trained_items > 0,
            "refit_trained_users": whole.trained_users > 0,
        }
    np.savez(out / "ids.npz", **ids)
    manifest = {
        "format": FORMAT,
        "name": name,
        "source": source,
        "config": prepared_config(cfg),
        "tasks": [t.model_dump(mode="json") for t in tasks],
        "n_users": users.size,
        "n_items": items.size,
        "interactions": writer.n_rows,
        "train_events": sum(s["rows"] for s in writer.shards),
        "schema_sha256": schema_hash(writer.schema),
        "shards": writer.shards,
        "refit": None if whole is None else {"events": whole.n_rows, "shards": whole.shards},
    }
    (out / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    shutil.rmtree(tmp)
    return manifest


def schema_hash(schema: pa.Schema) -> str:
    """sha256 of a sample shard's column names and types."""
    return hashlib.sha256(schema.to_string(show_schema_metadata=False).encode()).hexdigest()


def _claim(out: Path) -> None:
    if (
        out.exists()
        and any(p.name != ".tmp" for p in out.iterdir())
        and not (out / MANIFEST).is_file()
    ):
        raise DataError(f"--out {out}: a folder with other files; give an empty or new folder")
    if out.exists():
        shutil.rmtree(out)  # an earlier prepared folder (or its leftovers) is replaced
    out.mkdir(parents=True)


def _built_in(cfg: Config, source: str, tmp: Path) -> Path:
    """A built-in source written out as a data folder (the tables are small)."""
    from training.data.sources import raw_tables

    folder = tmp / "source"
    folder.mkdir()
    for table, raw in raw_tables(source, cfg.synthetic).items():
        raw.frame.to_parquet(folder / f"{table}.parquet", index=False)
    return folder
