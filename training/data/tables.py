"""The three tables of DESIGN.md "Data format" and their validation.

Every source (MovieLens-100K, a data directory, the synthetic generator; `sources.py`) yields raw
string tables; `parse_tables` validates them once and returns typed ones. Every problem is
reported with the file, the row and the column, all at once (up to MAX_PROBLEMS), so a user fixes
their log in one pass.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from service.artifact import FeatureSpec, TaskSpec
from training.data.features import check_features
from training.data.raw import Problems, RawTable, numbers

REQUIRED = {
    "interactions": ("user_id", "item_id", "timestamp"),
    "users": ("user_id",),
    "items": ("item_id",),
}


@dataclass(frozen=True)
class Tables:
    """Validated tables. Ids are strings; empty profile cells are '' (unknown label)."""

    interactions: pd.DataFrame  # user_id, item_id, timestamp int64[, rating float64, ...]
    users: pd.DataFrame  # user_id + profile columns
    items: pd.DataFrame  # item_id + content columns, as read (strings)


def parse_tables(
    raw: dict[str, RawTable], tasks: Sequence[TaskSpec], features: Sequence[FeatureSpec] = ()
) -> Tables:
    """Validate raw tables against DESIGN.md, the tasks' label columns and the item features;
    convert types.

    Raises:
        DataError: listing file, row and column of every problem found.
    """
    problems = Problems()
    for name, columns in REQUIRED.items():
        for column in columns:
            if column not in raw[name].frame.columns:
                problems.add(f"{raw[name].file}: missing column {column!r}")
    _check_task_columns(raw, tasks, problems)
    check_features(raw["items"], features, problems)
    problems.raise_if_any()  # nothing below makes sense without the columns

    inter, users, items = raw["interactions"], raw["users"], raw["items"]
    for table, id_column in ((users, "user_id"), (items, "item_id")):
        _check_ids(table, id_column, problems, unique=True)
    _check_ids(inter, "user_id", problems, unique=False)
    _check_ids(inter, "item_id", problems, unique=False)
    _check_known(inter, "user_id", users, problems)
    _check_known(inter, "item_id", items, problems)
    timestamp = numbers(inter, "timestamp", problems, integer=True)
    numeric_columns = {"rating"} & set(inter.frame.columns)
    numeric_columns |= {t.column for t in tasks if t.level == "item" and t.column}
    parsed = {
        c: numbers(inter, c, problems, integer=False, empty_ok=True)
        for c in sorted(numeric_columns)
    }
    for task in tasks:
        if task.level == "user" and task.bins is not None and task.column is not None:
            numbers(
                users,
                task.column,
                problems,
                integer=False,
                empty_ok=True,
                why=f" (task {task.name!r} bins it)",
            )
    problems.raise_if_any()

    frame = inter.frame.copy()
    frame["timestamp"] = timestamp.astype(np.int64)
    for column, values in parsed.items():
        frame[column] = values
    return Tables(interactions=frame, users=users.frame, items=items.frame)


def _check_task_columns(
    raw: dict[str, RawTable], tasks: Sequence[TaskSpec], problems: Problems
) -> None:
    for task in tasks:
        table = raw["users"] if task.level == "user" else raw["interactions"]
        if task.column and task.column not in table.frame.columns:
            problems.add(
                f"{table.file}: missing column {task.column!r} needed by task {task.name!r}"
            )


def _check_ids(table: RawTable, column: str, problems: Problems, unique: bool) -> None:
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


def _check_known(inter: RawTable, column: str, table: RawTable, problems: Problems) -> None:
    missing = ~inter.frame[column].isin(set(table.frame[column])).to_numpy()
    for i in np.flatnonzero(missing):
        problems.add(
            f"{inter.where(int(i), column)}: {inter.frame[column].iloc[i]!r} is not in {table.file}"
        )
