"""A user's own log: a folder with `interactions`, `users` and `items` as CSV or Parquet."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from training.data.features import VECTOR_SEPARATOR
from training.data.raw import DataError, RawTable

TABLES = ("interactions", "users", "items")


def read_directory(folder: Path) -> dict[str, RawTable]:
    """Read the three tables of `folder` as strings ('' for empty cells).

    Raises:
        DataError: the folder or a table is missing, ambiguous or unreadable.
    """
    if not folder.is_dir():
        raise DataError(
            f"data source {str(folder)!r} is neither 'movielens', 'synthetic' nor a folder"
        )
    return {name: read_one(folder, name) for name in TABLES}


def read_one(folder: Path, name: str) -> RawTable:
    """One of the three tables of `folder` (its CSV, its Parquet file or its folder of shards)."""
    path = table_path(folder, name)
    return read_shards(path) if path.is_dir() else read_table(path)


def table_path(folder: Path, name: str) -> Path:
    """Where table `name` of `folder` is: `name.csv`, `name.parquet` or a folder `name/` of
    Parquet shards (`python -m training synthesize`).

    Raises:
        DataError: none of them, more than one, or a folder without a shard.
    """
    shards = folder / name
    found = [p for p in (folder / f"{name}.csv", folder / f"{name}.parquet") if p.is_file()]
    found += [shards] if shards.is_dir() else []
    if not found:
        raise DataError(f"{folder}: no {name}.csv, {name}.parquet or {name}/ of Parquet shards")
    if len(found) > 1:
        names = ", ".join(p.name + ("/" if p.is_dir() else "") for p in found)
        raise DataError(f"{folder}: more than one {name} table ({names}); keep one")
    if found[0] == shards and not any(shards.glob("*.parquet")):
        raise DataError(f"{shards}: no .parquet shards")
    return found[0]


def read_shards(folder: Path) -> RawTable:
    """A table split into `folder/*.parquet` (read in name order), every cell a string.

    Raises:
        DataError: no shard, or a shard that is unreadable or has other columns than the first.
    """
    paths = sorted(folder.glob("*.parquet"))
    if not paths:
        raise DataError(f"{folder}: no .parquet shards")  # read_shards may be called directly
    parts = [read_table(p) for p in paths]
    columns = list(parts[0].frame.columns)
    for path, part in zip(paths, parts, strict=True):
        if list(part.frame.columns) != columns:
            got = list(part.frame.columns)
            raise DataError(f"{path}: columns {got} differ from {paths[0].name}'s {columns}")
    frame = pd.concat([p.frame for p in parts], ignore_index=True)
    return RawTable(frame=frame, file=f"{folder.name}/", first_row=1, row_word="row")


def read_table(path: Path) -> RawTable:
    """One table from a `.csv` (header row) or `.parquet` file, every cell a string.

    Raises:
        DataError: the file is missing, of another type or unreadable.
    """
    if path.suffix not in (".csv", ".parquet") or not path.is_file():
        raise DataError(f"{path}: not a .csv or .parquet file")
    try:
        if path.suffix == ".csv":
            frame = pd.read_csv(path, dtype=str, keep_default_na=False, na_filter=False)
            return RawTable(frame=_strings(frame), file=path.name)
        frame = pd.read_parquet(path)
    except (OSError, ValueError, UnicodeDecodeError, pd.errors.ParserError) as e:
        raise DataError(f"{path}: unreadable ({e})") from None
    return RawTable(frame=_strings(frame), file=path.name, first_row=1, row_word="row")


def _strings(frame: pd.DataFrame) -> pd.DataFrame:
    """Every cell as str, missing values as ''; ids read from Parquet ints become '42', a
    timestamp column (naive = UTC, or with a time zone) its Unix seconds, a list cell (a vector
    feature) '0.1|0.2|...'."""
    out = frame.copy()
    out.columns = [str(c).strip() for c in out.columns]
    for column in out.columns:
        values = out[column]
        if values.map(lambda v: isinstance(v, list | np.ndarray)).any():  # a list column
            out[column] = [
                VECTOR_SEPARATOR.join(map(repr, map(float, v))) if v is not None else ""
                for v in values
            ]
            continue
        if pd.api.types.is_datetime64_any_dtype(values):
            utc = values.dt.tz_convert("UTC") if values.dt.tz else values.dt.tz_localize("UTC")
            values = (utc - pd.Timestamp(0, tz="UTC")) // pd.Timedelta(seconds=1)
        if pd.api.types.is_float_dtype(values) and (values.dropna() % 1 == 0).all():
            values = values.astype("Int64")  # 42.0 (a float column with gaps) -> "42"
        out[column] = values.astype(object).where(values.notna(), "").astype(str)
    return out.reset_index(drop=True)
