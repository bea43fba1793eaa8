"""Validation of the three input tables: every problem named by file, row and column."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from training.config_file import load_config
from training.data.raw import DataError
from training.data.sources import load_tables

TASKS = load_config(None).tasks


def _fails_with(folder: Path, *needles: str) -> str:
    with pytest.raises(DataError) as info:
        load_tables(str(folder), TASKS)
    for needle in needles:
        assert needle in str(info.value)
    return str(info.value)


def _edit(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert old in text
    path.write_text(text.replace(old, new, 1))


def test_valid_folder_loads_with_types(data_dir: Path) -> None:
    tables = load_tables(str(data_dir), TASKS)

    assert len(tables.interactions) == 20
    assert tables.interactions["timestamp"].dtype == "int64"
    assert tables.interactions["rating"].dtype == "float64"
    assert tables.users.loc[1, "age"] == ""  # an empty cell stays an unknown label


def test_parquet_tables_load_like_csv(data_dir: Path) -> None:
    for name in ("interactions", "users", "items"):
        frame = pd.read_csv(data_dir / f"{name}.csv", dtype=str, keep_default_na=False)
        frame.to_parquet(data_dir / f"{name}.parquet")
        (data_dir / f"{name}.csv").unlink()

    tables = load_tables(str(data_dir), TASKS)

    assert len(tables.interactions) == 20
    assert list(tables.users["user_id"]) == ["u0", "u1", "u2", "u3"]


def test_missing_table(data_dir: Path) -> None:
    (data_dir / "items.csv").unlink()
    _fails_with(data_dir, "no items.csv, items.parquet or items/ of Parquet shards")


def test_both_csv_and_parquet_is_ambiguous(data_dir: Path) -> None:
    pd.read_csv(data_dir / "items.csv").to_parquet(data_dir / "items.parquet")
    _fails_with(data_dir, "more than one items table (items.csv, items.parquet)")
    (data_dir / "items.parquet").unlink()
    (data_dir / "items").mkdir()
    _fails_with(data_dir, "more than one items table (items.csv, items/)")


def test_shards_with_other_columns_are_refused(data_dir: Path) -> None:
    items = pd.read_csv(data_dir / "items.csv")
    (data_dir / "items.csv").unlink()
    (data_dir / "items").mkdir()
    items[:3].to_parquet(data_dir / "items" / "part-0.parquet")
    items[3:].drop(columns="title").to_parquet(data_dir / "items" / "part-1.parquet")
    _fails_with(data_dir, "part-1.parquet: columns", "differ from part-0.parquet's")


def test_not_a_folder(tmp_path: Path) -> None:
    _fails_with(tmp_path / "nope", "neither 'movielens', 'synthetic' nor a folder")


@pytest.mark.parametrize(
    ("file", "old", "new", "message"),
    [
        (
            "interactions.csv",
            "user_id,item_id,timestamp",
            "user_id,item_id,time",
            "interactions.csv: missing column 'timestamp'",
        ),
        (
            "users.csv",
            "occupation",
            "job",
            "users.csv: missing column 'occupation' needed by task 'occupation'",
        ),
        (
            "interactions.csv",
            "u0,i0,1000",
            "u0,i0,yesterday",
            "interactions.csv line 2, column timestamp: 'yesterday' is not an integer",
        ),
        (
            "interactions.csv",
            "u0,i1,1001",
            "u0,i1,1001.5",
            "interactions.csv line 3, column timestamp: '1001.5' is not an integer",
        ),
        (
            "interactions.csv",
            "u0,i0,1000,1",
            "u0,i0,1000,great",
            "interactions.csv line 2, column rating: 'great' is not a number",
        ),
        (
            "users.csv",
            "u3,M,61,",
            "u0,M,61,",
            "users.csv line 5, column user_id: duplicate id 'u0' (first at users.csv line 2)",
        ),
        ("items.csv", "i2,Item 2", ",Item 2", "items.csv line 4, column item_id: empty id"),
        (
            "users.csv",
            "u0,F,23",
            "u0,F,twenty",
            "users.csv line 2, column age: 'twenty' is not a number (task 'age' bins it)",
        ),
    ],
)
def test_each_problem_names_file_row_and_column(
    data_dir: Path, file: str, old: str, new: str, message: str
) -> None:
    _edit(data_dir / file, old, new)
    _fails_with(data_dir, message)


def test_interaction_with_unknown_ids(data_dir: Path) -> None:
    _edit(data_dir / "interactions.csv", "u0,i0,1000", "ghost,i0,1000")
    _edit(data_dir / "interactions.csv", "u1,i1,1000", "u1,i99,1000")
    message = _fails_with(
        data_dir,
        "interactions.csv line 2, column user_id: 'ghost' is not in users.csv",
        "column item_id: 'i99' is not in items.csv",
    )
    assert message.startswith("2 problem(s)")


def test_many_problems_are_counted_and_capped(data_dir: Path) -> None:
    path = data_dir / "interactions.csv"
    path.write_text(path.read_text().replace(",10", ",x"))
    message = _fails_with(data_dir, "20 problem(s)")
    assert message.count("\n  - ") == 20


def test_parquet_rows_are_named_as_rows(data_dir: Path) -> None:
    frame = pd.read_csv(data_dir / "users.csv", dtype=str, keep_default_na=False)
    frame.loc[2, "age"] = "old"
    frame.to_parquet(data_dir / "users.parquet")
    (data_dir / "users.csv").unlink()
    _fails_with(data_dir, "users.parquet row 3, column age: 'old' is not a number")


def test_movielens_converts_to_the_documented_tables() -> None:
    tables = load_tables("movielens", TASKS)

    assert len(tables.interactions) == 100_000
    assert len(tables.users) == 943
    assert len(tables.items) == 1682
    assert set(tables.users.columns) >= {"user_id", "gender", "age", "occupation"}
    assert tables.users["age"].str.isdigit().all()  # the raw number; the age task bins it
    assert tables.items.loc[0, "genres"] == "Animation|Children's|Comedy"
