"""Samples: events with their candidates, labels and label masks, batched as the graph takes them.

An event is one interaction: the user's history strictly before it (no leakage), the real item
as candidate 0 and sampled never-interacted items after it. A batch holds B events and their
N = B * C candidates (`candidate_row` says whose), so the user side runs once per event, exactly
like a serving request. Labels: the interaction task (click) is 1 for candidate 0 and 0 for the
negatives; other item tasks are known for candidate 0 only; user tasks come from the profile,
hidden for profile-holdout (and calibration) users when training.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from service.artifact import UNK, TaskSpec
from training.data.raw import DataError
from training.data.split import Log, seen_pairs


@dataclass(frozen=True)
class Events:
    """E events, each with C candidates (column 0 the real item)."""

    index: np.ndarray  # [E] flat interaction index
    candidates: np.ndarray  # [E, C] item indices
    user_labelled: np.ndarray | None = None  # [E] bool: rows carrying user-task labels (all)
    cold: int = 0  # > 0: seen as a new user: id unknown, history = their first `cold` items
    # [E] flat index whose history (strictly before it) each event is scored with, when not its
    # own: a cold-item event is scored with its user's training + validation history
    history_at: np.ndarray | None = None

    def take(self, rows: np.ndarray) -> Events:
        """The events at `rows`."""
        labelled = None if self.user_labelled is None else self.user_labelled[rows]
        at = None if self.history_at is None else self.history_at[rows]
        return Events(self.index[rows], self.candidates[rows], labelled, self.cold, at)


@dataclass(frozen=True)
class Batch:
    """Graph inputs plus, per task, labels and a mask of which rows have a label."""

    inputs: dict[str, Tensor]  # user_id [B], history [B, L], candidate [N], candidate_row [N]
    labels: dict[str, Tensor]
    masks: dict[str, Tensor]

    def to(self, device: str) -> Batch:
        """The batch on `device` (itself on the CPU)."""
        if device == "cpu":
            return self
        return Batch(
            *(
                {k: v.to(device, non_blocking=True) for k, v in part.items()}
                for part in (self.inputs, self.labels, self.masks)
            )
        )


def sample_negatives(
    log: Log,
    index: np.ndarray,
    n: int,
    rng: np.random.Generator,
    among: np.ndarray | None = None,
) -> np.ndarray:
    """[E, n] items each event's user never interacted with (with replacement), drawn from
    `among` (default: the warm items; cold items are never a training negative)."""
    pool = log.warm_items if among is None else among
    return draw_negatives(log.user[index], n, pool, log.pair_keys, log.n_items, rng)


def draw_negatives(
    users: np.ndarray,
    n: int,
    pool: np.ndarray,
    pair_keys: np.ndarray,
    n_items: int,
    rng: np.random.Generator,
) -> np.ndarray:
    """[E, n] items of `pool` that each of `users` never interacted with (with replacement);
    `pair_keys`: the sorted user * n_items + item of every interaction of these users."""
    users = np.repeat(users[:, None], n, axis=1)  # [E, n]
    items = pool[rng.integers(0, len(pool), size=users.shape)]
    bad = seen_pairs(pair_keys, n_items, users, items)
    while bad.any():  # rejection: a user has interacted with a small share of the catalogue
        items[bad] = pool[rng.integers(0, len(pool), size=int(bad.sum()))]
        bad[bad] = seen_pairs(pair_keys, n_items, users[bad], items[bad])
    return items


def untouched(log: Log, user: int, among: np.ndarray) -> np.ndarray:
    """The items of `among` that `user` never interacted with."""
    return among[~log.interacted(np.full(len(among), user), among)]


def sample_distinct_negatives(
    log: Log, index: np.ndarray, n: int, rng: np.random.Generator
) -> np.ndarray:
    """[E, n] distinct never-interacted warm items per event (ranking evaluation)."""
    out = np.empty((len(index), n), dtype=np.int64)
    for row, user in enumerate(log.user[index]):
        pool = untouched(log, int(user), log.warm_items)
        if len(pool) < n:
            raise DataError(
                f"a user has only {len(pool)} never-interacted items; "
                f"eval.n_rank_negatives={n} is too many for this catalogue"
            )
        out[row] = rng.choice(pool, size=n, replace=False)
    return out


def with_negatives(
    log: Log, index: np.ndarray, negatives: np.ndarray, user_labelled: np.ndarray | None = None
) -> Events:
    """Events whose candidates are the real item followed by `negatives`."""
    candidates = np.concatenate([log.item[index][:, None], negatives], axis=1)
    return Events(index, candidates, user_labelled)


def pick_per_user(users: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """[E] bool marking n random rows of each user (all rows of users with fewer)."""
    keys = rng.random(len(users))
    order = np.lexsort((keys, users))  # grouped by user, random within the user
    sorted_users = users[order]
    starts = np.flatnonzero(np.r_[True, sorted_users[1:] != sorted_users[:-1]])
    rank = np.arange(len(users)) - np.repeat(starts, np.diff(np.r_[starts, len(users)]))
    picked = np.zeros(len(users), dtype=bool)
    picked[order] = rank < n
    return picked


def pick_profile_events(
    log: Log, index: np.ndarray, n: int, history_length: int, rng: np.random.Generator
) -> np.ndarray:
    """[E] bool marking, per user, n random training events among those whose history window is
    as full as the user's training history allows. The user heads then learn from the view that
    the evaluation and the service give them (the last L items), not from a first few clicks
    (MovieLens-100K occupation accuracy 0.217 with any event)."""
    users = log.user[index]
    counts = np.bincount(users, minlength=log.n_users)[users]  # training events per user
    eligible = log.position[index] >= np.minimum(history_length, counts - n)
    picked = np.zeros(len(index), dtype=bool)
    picked[eligible] = pick_per_user(users[eligible], n, rng)
    return picked


def batches(
    log: Log,
    events: Events,
    tasks: Sequence[TaskSpec],
    history_length: int,
    batch_size: int,
    hide_holdout: bool,
    rng: np.random.Generator | None = None,
) -> Iterator[Batch]:
    """Batches of `batch_size` events, shuffled when `rng` is given."""
    order = rng.permutation(len(events.index)) if rng is not None else np.arange(len(events.index))
    for start in range(0, len(order), batch_size):
        rows = order[start : start + batch_size]
        yield make_batch(log, events.take(rows), tasks, history_length, hide_holdout)


def make_batch(
    log: Log, events: Events, tasks: Sequence[TaskSpec], history_length: int, hide_holdout: bool
) -> Batch:
    """One batch of B events with C candidates each (N = B * C)."""
    users = log.user[events.index]  # [B]
    known: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for task in tasks:
        if task.level == "item" and not task.interaction:
            labels = log.item_labels[task.name]
            known[task.name] = labels.values[events.index], labels.mask[events.index]
        elif task.level == "user":
            labels = log.user_labels[task.name]
            mask = labels.mask[users] & ~(hide_holdout & log.hidden[users])
            if events.user_labelled is not None:
                mask &= events.user_labelled
            known[task.name] = labels.values[users], mask
    history = log.history(
        events.index if events.history_at is None else events.history_at,
        history_length,
        first=events.cold,
    )
    user_id = np.full_like(users, UNK) if events.cold else users
    return to_batch(user_id, history, events.candidates, tasks, known)


def to_batch(
    user_id: np.ndarray,
    history: np.ndarray,
    candidates: np.ndarray,
    tasks: Sequence[TaskSpec],
    known: dict[str, tuple[np.ndarray, np.ndarray]],
) -> Batch:
    """The batch of B events: `user_id` [B], `history` [B, L], `candidates` [B, C] (column 0 the
    real item) and, per task with a label column and per user task, (values, mask) per event."""
    n_events, n_candidates = candidates.shape
    inputs = {
        "user_id": user_id,
        "history": history,
        "candidate": candidates.reshape(-1),  # [N]
        "candidate_row": np.repeat(np.arange(n_events), n_candidates),  # [N]
    }
    is_real = np.zeros((n_events, n_candidates), dtype=bool)
    is_real[:, 0] = True
    labels: dict[str, np.ndarray] = {}
    masks: dict[str, np.ndarray] = {}
    for task in tasks:
        if task.interaction:
            labels[task.name], masks[task.name] = is_real.astype(np.float32), np.ones_like(is_real)
        elif task.level == "item":
            values, mask = known[task.name]
            labels[task.name] = np.repeat(values[:, None], n_candidates, 1)
            masks[task.name] = is_real & mask[:, None]
        else:
            labels[task.name], masks[task.name] = known[task.name]
        if task.level == "item":
            labels[task.name] = labels[task.name].reshape(-1)
            masks[task.name] = masks[task.name].reshape(-1)
    return Batch(
        inputs={
            k: torch.from_numpy(np.ascontiguousarray(v, dtype=np.int64)) for k, v in inputs.items()
        },
        labels={k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in labels.items()},
        masks={k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in masks.items()},
    )
