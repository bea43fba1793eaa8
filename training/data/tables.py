"""The three tables of DESIGN.md "Data format", their validation, and the source dispatcher.

Every source (MovieLens-100K, a data directory, the synthetic generator) yields raw string tables;
`parse_tables` validates them once and returns typed ones. Every problem is reported with the file,
the row and the column, all at once (up to MAX_PROBLEMS), so a user fixes their log in one pass.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from service.artifact import TaskSpec
from training.config import SyntheticConfig

MAX_PROBLEMS = 20
REQUIRED = {
    "interactions": ("user_id", "item_id", "timestamp"),
    "users": ("user_id",),
    "items": ("item_id",),
}


class DataError(ValueError):
    """The input tables are invalid; the message lists every problem found."""


@dataclass(frozen=True)
class RawTable:
    """A table as read: every cell a string ('' = empty), plus how to name its rows."""

    frame: pd.DataFrame
    file: str  # e.g. "users.csv"
    first_row: int = 2  # what the first data row is called: line 2 of a CSV, row 1 of Parquet
    row_word: str = "line"

    def where(self, index: int, column: str | None = None) -> str:
        """'users.csv line 7, column age' for the data row at 0-based position `index`."""
        at = f"{self.file} {self.row_word} {index + self.first_row}"
        return f"{at}, column {column}" if column else at


@dataclass(frozen=True)
class Tables:
    """Validated tables. Ids are strings; empty profile cells are '' (unknown label)."""

    interactions: pd.DataFrame  # user_id, item_id, timestamp int64[, rating float64, ...]
    users: pd.DataFrame  # user_id + profile columns
    items: pd.DataFrame  # item_id + content columns


class _Problems:
    def __init__(self) -> None:
        self.items: list[str] = []
        self.count = 0

    def add(self, message: str) -> None:
        self.count += 1
        if len(self.items) < MAX_PROBLEMS:
            self.items.append(message)

    def raise_if_any(self) -> None:
        if self.count:
            hidden = self.count - len(self.items)
            more = f"\n  ... and {hidden} more" if hidden else ""
            lines = "\n".join(f"  - {m}" for m in self.items)
            raise DataError(f"{self.count} problem(s) in the input data:\n{lines}{more}")


def parse_tables(raw: dict[str, RawTable], tasks: Sequence[TaskSpec]) -> Tables:
    """Validate raw tables against DESIGN.md and the tasks' label columns; convert types.

    Raises:
        DataError: listing file, row and column of every problem found.
    """
    problems = _Problems()
    for name, columns in REQUIRED.items():
        for column in columns:
            if column not in raw[name].frame.columns:
                problems.add(f"{raw[name].file}: missing column {column!r}")
    _check_task_columns(raw, tasks, problems)
    problems.raise_if_any()  # nothing below makes sense without the columns

    inter, users, items = raw["interactions"], raw["users"], raw["items"]
    for table, id_column in ((users, "user_id"), (items, "item_id")):
        _check_ids(table, id_column, problems, unique=True)
    _check_ids(inter, "user_id", problems, unique=False)
    _check_ids(inter, "item_id", problems, unique=False)
    _check_known(inter, "user_id", users, problems)
    _check_known(inter, "item_id", items, problems)
    timestamp = _numeric(inter, "timestamp", problems, integer=True)
    numeric_columns = {"rating"} & set(inter.frame.columns)
    numeric_columns |= {t.column for t in tasks if t.level == "item" and t.column}
    parsed = {
        c: _numeric(inter, c, problems, integer=False, empty_ok=True)
        for c in sorted(numeric_columns)
    }
    for task in tasks:
        if task.level == "user" and task.bins is not None and task.column is not None:
            _numeric(users, task.column, problems, integer=False, empty_ok=True, task=task.name)
    problems.raise_if_any()

    frame = inter.frame.copy()
    frame["timestamp"] = timestamp.astype(np.int64)
    for column, values in parsed.items():
        frame[column] = values
    return Tables(interactions=frame, users=users.frame, items=items.frame)


def _check_task_columns(
    raw: dict[str, RawTable], tasks: Sequence[TaskSpec], problems: _Problems
) -> None:
    for task in tasks:
        table = raw["users"] if task.level == "user" else raw["interactions"]
        if task.column and task.column not in table.frame.columns:
            problems.add(
                f"{table.file}: missing column {task.column!r} needed by task {task.name!r}"
            )


def _check_ids(table: RawTable, column: str, problems: _Problems, unique: bool) -> None:
    values = table.frame[column]
    for i in np.flatnonzero((values.str.strip() == "").to_numpy()):
        problems.add(f"{table.where(int(i), column)}: empty id")
    if unique:
        duplicated = values.duplicated(keep="first").to_numpy()
        first = {v: i for i, v in reversed(list(enumerate(values)))}
        for i in np.flatnonzero(duplicated):
            where_first = table.where(first[values.iloc[i]])
            problems.add(
                f"{table.where(int(i), column)}: duplicate id {values.iloc[i]!r} "
                f"(first at {where_first})"
            )


def _check_known(inter: RawTable, column: str, table: RawTable, problems: _Problems) -> None:
    missing = ~inter.frame[column].isin(set(table.frame[column])).to_numpy()
    for i in np.flatnonzero(missing):
        problems.add(
            f"{inter.where(int(i), column)}: {inter.frame[column].iloc[i]!r} is not in {table.file}"
        )


def _numeric(
    table: RawTable,
    column: str,
    problems: _Problems,
    integer: bool,
    empty_ok: bool = False,
    task: str | None = None,
) -> pd.Series:
    text = table.frame[column].str.strip()
    values = pd.to_numeric(text, errors="coerce").astype(np.float64)
    empty = (text == "").to_numpy()
    bad = ~np.isfinite(values.to_numpy()) & ~(empty & empty_ok)
    if integer:
        bad |= np.isfinite(values.to_numpy()) & (values.to_numpy() % 1 != 0)
    what = "an integer (Unix seconds)" if integer else "a number"
    why = f" (task {task!r} bins it)" if task else ""
    for i in np.flatnonzero(bad):
        problems.add(f"{table.where(int(i), column)}: {text.iloc[i]!r} is not {what}{why}")
    return values


def load_tables(
    source: str, tasks: Sequence[TaskSpec], synthetic: SyntheticConfig | None = None
) -> Tables:
    """Read and validate the tables of a source: `movielens`, `synthetic` or a directory path.

    Args:
        source: `movielens`, `synthetic`, or a folder with interactions/users/items CSV or Parquet.
        tasks: The task specs, whose label columns must exist.
        synthetic: A `SyntheticConfig` for the synthetic source.
    """
    if source == "movielens":
        from training.data.movielens import read_movielens

        return parse_tables(read_movielens(), tasks)
    if source == "synthetic":
        from training.data.synthetic import generate

        return parse_tables(generate(synthetic or SyntheticConfig()), tasks)
    from training.data.directory import read_directory

    return parse_tables(read_directory(Path(source)), tasks)
