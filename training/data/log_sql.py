"""The SQL side of `prepare` (training.data.prepare), in DuckDB, out of core: the
interactions table scanned and validated (file and row of each problem), joined to the
vocabulary indices, its items counted, and sorted as the in-memory path sorts the log."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from service.artifact import FIRST_ID, TaskSpec
from training.data.directory import table_path
from training.data.raw import MAX_PROBLEMS, Problems
from training.data.vocab import Vocab

READ_ROWS = 65_536  # sorted interactions per row group, read back per batch


def numeric_label_columns(tasks: Sequence[TaskSpec], columns: Sequence[str]) -> list[str]:
    """The numeric interaction columns: `rating` and every item task's label column."""
    wanted = {"rating"} & set(columns)
    wanted |= {str(t.column) for t in tasks if t.level == "item" and t.column}
    return sorted(wanted)


@dataclass(frozen=True)
class Scan:
    """The interactions table as a DuckDB view `inter`: user_id, item_id (VARCHAR), the raw
    columns, and `_file`, `_row`: how a problem names the row, and the file order of ties."""

    file: str
    columns: tuple[str, ...]

    @classmethod
    def open(cls, con: Any, folder: Path) -> Scan:
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


def item_counts(con: Any, items: Vocab) -> np.ndarray:
    """[n_items] interactions per item index."""
    counts = np.zeros(items.size, dtype=np.int64)
    rows = con.sql("SELECT iv.idx, count(*) FROM inter JOIN iv ON inter.item_id = iv.id GROUP BY 1")
    for index, count in rows.fetchall():
        counts[index] = count
    return counts


def register_vocabs(con: Any, users: Vocab, items: Vocab) -> None:
    """The vocabularies as DuckDB tables uv / iv (id VARCHAR, idx BIGINT)."""
    for table, vocab in (("uv", users), ("iv", items)):
        frame = pd.DataFrame(
            {"id": list(vocab.ids), "idx": np.arange(FIRST_ID, vocab.size, dtype=np.int64)}
        )
        con.register(f"_{table}", frame)
        con.execute(f"CREATE TEMP TABLE {table} AS SELECT * FROM _{table}")
        con.unregister(f"_{table}")


def sort_log(
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
