"""Vocabularies (id -> index) with the contract's convention: 0 padding, 1 unknown, ids from 2."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from service.artifact import FIRST_ID, UNK, TaskSpec, write_vocab
from training.data.raw import DataError
from training.data.tables import Tables


@dataclass(frozen=True)
class Vocab:
    """A frozen id list; index of ids[i] is FIRST_ID + i."""

    ids: tuple[str, ...]

    @classmethod
    def build(cls, ids: Iterable[str]) -> Vocab:
        """Sorted unique ids (deterministic across runs and sources)."""
        return cls(tuple(sorted(set(ids))))

    @property
    def size(self) -> int:
        """Rows of an embedding table over this vocabulary (PAD and UNK included)."""
        return len(self.ids) + FIRST_ID

    def encode(self, values: Sequence[str] | pd.Series) -> np.ndarray:
        """Indices (int64) of `values`; ids not in the vocabulary map to UNK."""
        lookup = pd.Index(self.ids)
        found = lookup.get_indexer(pd.Index(values))
        return np.where(found >= 0, found + FIRST_ID, UNK).astype(np.int64)

    def save(self, path: Path) -> None:
        """Write one id per line."""
        write_vocab(path, list(self.ids))


def resolve_tasks(tasks: Sequence[TaskSpec], tables: Tables) -> tuple[TaskSpec, ...]:
    """Fill in the classes of user tasks that leave them to the data (sorted labels seen).

    Raises:
        DataError: a user task's column holds no label at all, or a single class.
    """
    resolved = []
    for task in tasks:
        if task.level == "user" and not task.classes:
            cells = tables.users[str(task.column)].astype(str).str.strip()
            cells = cells[cells != ""]
            if task.kind == "multilabel":
                cells = cells.str.split(task.separator).explode().str.strip()
            classes = sorted(set(cells) - {""})
            if len(classes) < 2:
                raise DataError(
                    f"users: column {task.column!r} of task {task.name!r} has "
                    f"{len(classes)} distinct label(s); a task needs at least 2"
                )
            task = task.model_copy(update={"classes": tuple(classes)})
        resolved.append(task)
    return tuple(resolved)


def interaction_task(tasks: Sequence[TaskSpec]) -> str:
    """The name of the interaction task (click): the item task without a label column."""
    return next(t.name for t in tasks if t.interaction)
