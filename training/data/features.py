"""Item feature columns of the items table: validation and cell parsing, per feature kind.

Every problem names the file, row and column (as `tables.py` does for the other columns), so a
user fixes an items file in one pass. A missing value is never an error: it is encoded as
missing (a learned input of the content encoder, `content.py`). A value that cannot be what its
kind says (a year of 'nineteen', a vector of the wrong width) is.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from service.artifact import FeatureSpec
from training.data.raw import Problems, RawTable, numbers

VECTOR_SEPARATOR = "|"  # how a list cell (Parquet) reaches the parser: '0.1|0.2|...'


def vector_columns(spec: FeatureSpec) -> list[str]:
    """The CSV form of a vector feature: `<column>_0 .. <column>_{dim-1}`."""
    return [f"{spec.column}_{k}" for k in range(spec.dim or 0)]


def check_features(items: RawTable, specs: Sequence[FeatureSpec], problems: Problems) -> None:
    """Report every missing feature column and every value its kind cannot read."""
    for spec in specs:
        if not _has_columns(items, spec, problems):
            continue
        if spec.kind == "numeric":
            numbers(items, spec.column, problems, integer=False, empty_ok=True, why=" (feature)")
        elif spec.kind == "vector":
            vector_values(items, spec, problems)


def _has_columns(items: RawTable, spec: FeatureSpec, problems: Problems) -> bool:
    columns = set(items.frame.columns)
    if spec.column in columns:
        return True
    if spec.kind == "vector":
        split = vector_columns(spec)
        absent = [c for c in split if c not in columns]
        if not absent:
            return True
        if len(absent) < len(split):
            problems.add(
                f"{items.file}: vector feature {spec.column!r} has dim={spec.dim}, "
                f"but column {absent[0]!r} is missing"
            )
            return False
        problems.add(
            f"{items.file}: missing column {spec.column!r} (a list) or "
            f"{split[0]!r}..{split[-1]!r} needed by vector feature {spec.column!r}"
        )
        return False
    problems.add(f"{items.file}: missing column {spec.column!r} needed by {spec.kind} feature")
    return False


def tokens_of(spec: FeatureSpec, cells: pd.Series) -> list[list[str]]:
    """The tokens of each cell: one for categorical, split for multi_categorical, none if empty."""
    text = cells.astype(str).str.strip()
    if spec.kind == "categorical":
        return [[t] if t else [] for t in text]
    return [[t.strip() for t in cell.split(spec.separator) if t.strip()] for cell in text]


def vector_values(
    items: RawTable, spec: FeatureSpec, problems: Problems
) -> tuple[np.ndarray, np.ndarray]:
    """([n, dim] float64 values, [n] missing) of a vector feature; bad cells reported.

    A row is missing when all its cells are empty; a partly empty or non-numeric row, or a list
    of another length, is a problem.
    """
    dim = int(spec.dim or 0)
    frame = items.frame
    if spec.column in frame.columns:
        cells = frame[spec.column].astype(str).str.strip()
        parts = [c.split(VECTOR_SEPARATOR) if c else [] for c in cells]
        names = [spec.column] * dim  # one list column: every value is in it
    else:
        split = frame[vector_columns(spec)].astype(str).apply(lambda s: s.str.strip())
        parts = [list(row) if any(row) else [] for row in split.itertuples(index=False)]
        names = vector_columns(spec)
    values = np.zeros((len(frame), dim), dtype=np.float64)
    missing = np.zeros(len(frame), dtype=bool)
    for i, row in enumerate(parts):
        if not row:
            missing[i] = True
            continue
        if len(row) != dim:
            problems.add(
                f"{items.where(i, spec.column)}: a vector of {len(row)} values, "
                f"the feature has dim={dim}"
            )
            continue
        parsed = pd.to_numeric(pd.Series(row), errors="coerce").to_numpy(dtype=np.float64)
        for k in np.flatnonzero(~np.isfinite(parsed)):
            problems.add(f"{items.where(i, names[k])}: {row[k]!r} is not a number (vector feature)")
        values[i] = np.nan_to_num(parsed)
    return values, missing
