"""What every source yields before validation: raw string tables, and how problems are reported.

Kept apart from the validation (`tables.py`) and the sources (`sources.py`), so the readers and
the validation both import it and nothing imports back.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

MAX_PROBLEMS = 20


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


class Problems:
    """Problems found so far (the first MAX_PROBLEMS kept), raised together."""

    def __init__(self) -> None:
        self.items: list[str] = []
        self.count = 0

    def add(self, message: str) -> None:
        """Record one problem (counted even past MAX_PROBLEMS)."""
        self.count += 1
        if len(self.items) < MAX_PROBLEMS:
            self.items.append(message)

    def raise_if_any(self) -> None:
        """Raise DataError listing the problems, if there are any."""
        if self.count:
            hidden = self.count - len(self.items)
            more = f"\n  ... and {hidden} more" if hidden else ""
            lines = "\n".join(f"  - {m}" for m in self.items)
            raise DataError(f"{self.count} problem(s) in the input data:\n{lines}{more}")


def numbers(
    table: RawTable,
    column: str,
    problems: Problems,
    integer: bool,
    empty_ok: bool = False,
    why: str = "",
) -> pd.Series:
    """A string column as float64 (NaN where empty and `empty_ok`); every bad cell reported."""
    text = table.frame[column].str.strip()
    values = pd.to_numeric(text, errors="coerce").astype(np.float64)
    empty = (text == "").to_numpy()
    bad = ~np.isfinite(values.to_numpy()) & ~(empty & empty_ok)
    if integer:
        bad |= np.isfinite(values.to_numpy()) & (values.to_numpy() % 1 != 0)
    what = "an integer (Unix seconds)" if integer else "a number"
    for i in np.flatnonzero(bad):
        problems.add(f"{table.where(int(i), column)}: {text.iloc[i]!r} is not {what}{why}")
    return values
