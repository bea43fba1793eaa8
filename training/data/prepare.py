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
  (training.refit): every interaction a training event in its user's whole sequence (validation,
  test and cold-item ones too), no profile label masked; left out by `prepare --no-refit`;
- `profile.npz` (per user index: task labels, holdout), `ids.npz` (trained items and users, cold
  items; the refit's trained items and users), `vocab/{user_id,item_id}.txt`, `items.parquet`
  (the items table, for item content).
"""

from __future__ import annotations

import hashlib
import json
import shutil
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from tqdm import tqdm

from service.artifact import FIRST_ID, TaskSpec
from training.config import BUILT_IN_SOURCES, Config, model_name
from training.data.directory import read_one, table_path
from training.data.labels import Labels, item_labels
from training.data.raw import MAX_PROBLEMS, DataError, Problems, RawTable
from training.data.split import (
    COLD,
    TRAIN,
    evaluation_users,
    fold_of,
    pick_cold_items,
    split_parts,
    user_profiles,
    windows,
)
from training.data.tables import parse_tables
from training.data.vocab import Vocab, resolve_tasks

MANIFEST = "prepared.json"
FORMAT = 2  # 2: the refit's shards
SHARD_EVENTS = 250_000  # training events per sample shard (about: whole users)
READ_ROWS = 65_536  # sorted interactions read back per batch


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
        scan = _Scan.open(con, folder)
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
        label_columns = _label_columns(tasks, scan.columns)
        _register_vocabs(con, users, items)
        scan.validate(con, label_columns)
        counts = _item_counts(con, items)
        cold_items = pick_cold_items(
            counts, cfg.eval.cold_item_fraction, cfg.eval.cold_item_min_interactions, cfg.eval.seed
        )
        sorted_log, sorted_whole = tmp / "sorted.parquet", tmp / "sorted-whole.parquet"
        _sort(con, cold_items, label_columns, sorted_log)
        if refit:  # no item is cold there: every interaction in its user's sequence
            _sort(con, np.zeros_like(cold_items), label_columns, sorted_whole)
    except duckdb.Error as e:
        raise DataError(f"{folder}: interactions unreadable ({e})") from None
    finally:
        con.close()
    profile, holdout = user_profiles(
        tables.users, users, tasks, cfg.eval.holdout_fraction, cfg.eval.seed, fold_of(cfg.eval)
    )
    writer = _Writer(
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


def _label_columns(tasks: Sequence[TaskSpec], columns: Sequence[str]) -> list[str]:
    """The numeric interaction columns: `rating` and every item task's label column."""
    wanted = {"rating"} & set(columns)
    wanted |= {str(t.column) for t in tasks if t.level == "item" and t.column}
    return sorted(wanted)


@dataclass(frozen=True)
class _Scan:
    """The interactions table as a DuckDB view `inter`: user_id, item_id (VARCHAR), the raw
    columns, and `_file`, `_row`: how a problem names the row, and the file order of ties."""

    file: str
    columns: tuple[str, ...]

    @classmethod
    def open(cls, con: Any, folder: Path) -> _Scan:
        path = table_path(folder, "interactions")
        csv = path.suffix == ".csv"
        if csv:
            scan = f"read_csv('{_quote(path)}', all_varchar=true, header=true) WITH ORDINALITY"
            where, file, word = "ordinality + 1", path.name, "line"
        else:
            glob = f"{path}/*.parquet" if path.is_dir() else str(path)
            scan = f"read_parquet('{_quote(Path(glob))}', filename=true, file_row_number=true)"
            where = "file_row_number + 1"
            file, word = (f"{path.name}/" if path.is_dir() else path.name), "row"
        described = con.sql(f"DESCRIBE SELECT * FROM {scan}").fetchall()
        types = {
            str(row[0]).strip(): str(row[1])
            for row in described
            if row[0] not in ("filename", "file_row_number", "ordinality")
        }
        originals = {str(row[0]).strip(): str(row[0]) for row in described}
        select = [f'{_as_text(originals[c], types[c])} AS "{c}"' for c in types]
        name = f"'{file}'" if csv else "regexp_extract(filename, '[^/]*$')"
        con.execute(
            f"CREATE TEMP VIEW inter AS SELECT {', '.join(select)}, "
            f"{name} AS _file, {where} AS _row FROM {scan}"
        )
        con.execute(f"CREATE TEMP MACRO place(f, r) AS f || ' {word} ' || r")
        return cls(file, tuple(types))

    def validate(self, con: Any, numeric: Sequence[str]) -> None:
        """Every bad cell of the interactions, with file and row (DataError)."""
        problems = Problems()
        checks = [  # (column, the rows that are wrong, what is said of each)
            ("user_id", "trim(user_id) = ''", "empty id"),
            ("item_id", "trim(item_id) = ''", "empty id"),
            (
                "user_id",
                "trim(user_id) <> '' AND user_id NOT IN (SELECT id FROM uv)",
                "{value!r} is not in users",
            ),
            (
                "item_id",
                "trim(item_id) <> '' AND item_id NOT IN (SELECT id FROM iv)",
                "{value!r} is not in items",
            ),
            (
                "timestamp",
                f"{_number('timestamp')} IS NULL OR {_number('timestamp')} % 1 <> 0",
                "{value!r} is not an integer (Unix seconds)",
            ),
        ]
        checks += [
            (c, f"trim({_q(c)}) <> '' AND {_number(c)} IS NULL", "{value!r} is not a number")
            for c in numeric
        ]
        for column, condition, said in checks:
            rows = con.sql(
                f"SELECT place(_file, _row), {_q(column)}, count(*) OVER () FROM inter "
                f"WHERE {condition} ORDER BY _file, _row LIMIT {MAX_PROBLEMS}"
            ).fetchall()
            for at, value, _ in rows:
                problems.add(f"{at}, column {column}: " + said.format(value=value))
            if rows:
                problems.count += int(rows[0][2]) - len(rows)
        problems.raise_if_any()


def _as_text(column: str, kind: str) -> str:
    """A raw column as VARCHAR the way the in-memory reader reads it ('' for missing; a
    timestamp as its Unix seconds)."""
    q = _q(column)
    if kind.startswith("TIMESTAMP"):
        return f"coalesce(CAST(floor(epoch({q})) AS BIGINT)::VARCHAR, '')"
    return f"coalesce(CAST({q} AS VARCHAR), '')"


def _number(column: str) -> str:
    return f"TRY_CAST(trim({_q(column)}) AS DOUBLE)"


def _q(column: str) -> str:
    return '"' + column.replace('"', '""') + '"'


def _quote(path: Path) -> str:
    return str(path).replace("'", "''")


def _item_counts(con: Any, items: Vocab) -> np.ndarray:
    """[n_items] interactions per item index."""
    counts = np.zeros(items.size, dtype=np.int64)
    rows = con.sql("SELECT iv.idx, count(*) FROM inter JOIN iv ON inter.item_id = iv.id GROUP BY 1")
    for index, count in rows.fetchall():
        counts[index] = count
    return counts


def _register_vocabs(con: Any, users: Vocab, items: Vocab) -> None:
    """The vocabularies as DuckDB tables uv / iv (id VARCHAR, idx BIGINT)."""
    for table, vocab in (("uv", users), ("iv", items)):
        frame = pd.DataFrame(
            {"id": list(vocab.ids), "idx": np.arange(FIRST_ID, vocab.size, dtype=np.int64)}
        )
        con.register(f"_{table}", frame)
        con.execute(f"CREATE TEMP TABLE {table} AS SELECT * FROM _{table}")
        con.unregister(f"_{table}")


def _sort(
    con: Any,
    cold_items: np.ndarray,
    label_columns: Sequence[str],
    out: Path,
) -> None:
    """The log with vocabulary indices, sorted as build_log sorts it, to one Parquet file."""
    cold = pd.DataFrame({"idx": np.flatnonzero(cold_items).astype(np.int64)})
    con.register("_cold", cold)
    labels = "".join(f", {_number(c)} AS {_q('label:' + c)}" for c in label_columns)
    con.execute(
        f"""COPY (
            SELECT uv.idx AS user, iv.idx AS item, iv.idx IN (SELECT idx FROM _cold) AS cold{labels}
            FROM inter JOIN uv ON inter.user_id = uv.id JOIN iv ON inter.item_id = iv.id
            ORDER BY cold, user, {_number("timestamp")}, inter.item_id, inter._file, inter._row
        ) TO '{_quote(out)}' (FORMAT parquet, ROW_GROUP_SIZE {READ_ROWS})"""
    )


@dataclass
class _Writer:
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
