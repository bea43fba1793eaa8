"""Task labels from the tables: per interaction for item tasks, per user for user tasks.

Missing labels are masked, never guessed: an empty profile cell, a rating that is absent, or a
value outside a task's classes gives mask False. Labels of the sampled negatives are decided in
samples.py (click 0, every other item task masked).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from service.artifact import TaskSpec


@dataclass(frozen=True)
class Labels:
    """Labels of one task over rows (interactions or users) and which rows have one."""

    values: np.ndarray  # [R] float32 (binary/regression), [R] int64 (multiclass), [R, K] multilabel
    mask: np.ndarray  # [R] bool


def item_labels(task: TaskSpec, interactions: pd.DataFrame) -> Labels:
    """Labels of an item task with a column, one per interaction row."""
    raw = interactions[str(task.column)].to_numpy(dtype=np.float64)
    mask = np.isfinite(raw)
    if task.kind == "binary":
        values = (np.nan_to_num(raw) >= float(task.threshold or 0.0)).astype(np.float32)
    else:
        values = np.nan_to_num(raw).astype(np.float32)
    return Labels(values, mask)


def user_labels(task: TaskSpec, users: pd.DataFrame) -> Labels:
    """Labels of a user task, one per row of `users` (class index or multi-hot)."""
    cells = users[str(task.column)].astype(str).str.strip()
    if task.kind == "multilabel":
        return _multilabel(task, cells)
    if task.bins is not None:
        numbers = pd.to_numeric(cells, errors="coerce").to_numpy(dtype=np.float64)
        mask = np.isfinite(numbers)
        index = np.searchsorted(np.asarray(task.bins), np.nan_to_num(numbers), side="right")
        return Labels(np.where(mask, index, -1).astype(np.int64), mask)
    index = pd.Index(task.classes).get_indexer(pd.Index(cells))
    return Labels(index.astype(np.int64), index >= 0)


def _multilabel(task: TaskSpec, cells: pd.Series) -> Labels:
    values = np.zeros((len(cells), len(task.classes)), dtype=np.float32)
    position = {c: k for k, c in enumerate(task.classes)}
    for row, cell in enumerate(cells):
        for label in cell.split(task.separator):
            if label.strip() in position:
                values[row, position[label.strip()]] = 1.0
    return Labels(values, (cells != "").to_numpy())
