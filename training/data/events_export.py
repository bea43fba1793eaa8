"""The service's event log as a data folder: `python -m training events export`.

The events become the interactions table (user_id, item_id, timestamp in whole Unix seconds,
rating where the event had one); the users and items tables list the ids the events name. With
a base source (the folder, or `movielens` / `synthetic`, the current model was trained on), the
base's interactions come first and the events after them, the users and items tables are the
base's, completed with the ids only the events know (their other cells empty: unknown labels
and content). Every table is written as Parquet, every cell a string, as sources are read
(training/data/directory.py), so `train --data OUT` reads it like any folder.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from pathlib import Path

import pandas as pd
from tqdm import tqdm

from eventstore import Event, StoreError, StoreUnavailable, open_store
from training.data.directory import TABLES
from training.data.raw import DataError
from training.data.sources import raw_tables

COLUMNS = ("user_id", "item_id", "timestamp", "rating")
ID_COLUMNS = {"users": "user_id", "items": "item_id"}


def export_events(
    store_url: str, out: Path, base: str | None = None, progress: bool = True
) -> dict[str, int]:
    """Write the store's event log (and the base's tables) as a data folder `out` (new or
    empty); returns each table's row count and how many events there were.

    Raises:
        DataError: the store cannot be opened or read, it holds no events and there is no base,
            `out` is not empty, or the base cannot be read.
    """
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise DataError(f"{out}: not an empty folder; the export writes a new one")
    base_tables = None if base is None else {n: t.frame for n, t in raw_tables(base).items()}
    events = read_log(store_url, progress)
    if events.empty and base_tables is None:
        raise DataError(f"{store_url}: the store holds no events; nothing to export")
    tables = {
        "interactions": events,
        "users": pd.DataFrame({"user_id": events["user_id"].unique()}),
        "items": pd.DataFrame({"item_id": events["item_id"].unique()}),
    }
    if base_tables is not None:
        tables = with_base(tables, base_tables)
    out.mkdir(parents=True, exist_ok=True)
    for name in TABLES:
        tables[name].to_parquet(out / f"{name}.parquet", index=False)
    return {"events": len(events)} | {name: len(tables[name]) for name in TABLES}


def read_log(store_url: str, progress: bool) -> pd.DataFrame:
    """Every stored event in the order accepted, as string columns COLUMNS.

    Raises:
        DataError: the store cannot be opened or read.
    """
    try:
        store = open_store(store_url)
    except StoreError as e:
        raise DataError(str(e)) from None
    try:
        log = tqdm(store.log(), desc="export", unit=" events", disable=not progress)
        return pd.DataFrame(list(_rows(log)), columns=list(COLUMNS), dtype=str)
    except StoreUnavailable as e:
        raise DataError(f"cannot read the event log: {e}") from None
    finally:
        store.close()


def _rows(events: Iterable[Event]) -> Iterator[tuple[str, str, str, str]]:
    for e in events:
        rating = "" if e.rating is None else repr(e.rating)
        yield e.user_id, e.item_id, str(int(e.timestamp)), rating


def with_base(
    events: dict[str, pd.DataFrame], base: dict[str, pd.DataFrame]
) -> dict[str, pd.DataFrame]:
    """The base's tables followed by the events' rows; the users and items tables gain only
    the ids they lack. A column only one side has is '' on the other side's rows."""
    merged = {"interactions": _stacked(base["interactions"], events["interactions"])}
    for name, column in ID_COLUMNS.items():
        known = set(base[name][column])
        new = events[name][~events[name][column].isin(known)]
        merged[name] = _stacked(base[name], new)
    return merged


def _stacked(first: pd.DataFrame, second: pd.DataFrame) -> pd.DataFrame:
    columns = list(dict.fromkeys([*first.columns, *second.columns]))
    frame = pd.concat([first, second], ignore_index=True)[columns]
    return frame.fillna("").astype(str)
