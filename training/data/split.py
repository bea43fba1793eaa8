"""The chronological per-user split and the profile holdout (DESIGN.md "Evaluation protocol").

Interactions are sorted per user by timestamp, then item id. With n interactions, the last
max(1, n // 10) are test, the max(1, n // 10) before them validation, the rest train; a user with
fewer than 3 interactions keeps them all in train. A fixed random fraction of users has its
profile labels hidden in training; user-task metrics are computed on them.

Cold items (DESIGN.md "Item content and new items"): a fixed random share of the items with at
least `cold_item_min_interactions` interactions lose every interaction before the split. Those
interactions are kept after all the others as part COLD, outside every user's sequence, so no
history window ever contains them; the cold-item figures score them.

The refit (training.fit.refit) reads `whole_log`: the same interactions with nothing held out, every
one a training event, every profile label read, every item in its users' sequences.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np
import pandas as pd

from service.artifact import FIRST_ID, PAD, TaskSpec
from training.config import EvalConfig
from training.data.labels import Labels, item_labels, user_labels
from training.data.tables import Tables
from training.data.vocab import Vocab

TRAIN, VALID, TEST, COLD = 0, 1, 2, 3


@dataclass(frozen=True)
class Log:
    """Every interaction as flat arrays, grouped by user in chronological order."""

    user: np.ndarray  # [M] user index
    item: np.ndarray  # [M] item index
    position: np.ndarray  # [M] 0-based position in the user's sequence
    part: np.ndarray  # [M] TRAIN | VALID | TEST
    item_labels: dict[str, Labels]  # per interaction, item tasks with a column
    user_labels: dict[str, Labels]  # per user index, user tasks
    holdout: np.ndarray  # [n_users] bool: profile labels hidden in training
    n_users: int  # vocabulary sizes (PAD and UNK rows included)
    n_items: int
    pair_keys: np.ndarray  # sorted unique user * n_items + item, for `interacted`
    cold_items: np.ndarray  # [n_items] bool: items whose interactions are all in COLD
    # ([n_items], [n_users] bool) ids with a training event anywhere, for a log that holds only
    # some users (a prepared folder's evaluation users); None: computed from this log
    trained_ids: tuple[np.ndarray, np.ndarray] | None = None
    # [n_users] bool: training users whose profile labels are also hidden in training, kept
    # to calibrate the profile heads on (`optim.calibration_users`, training.fit.calibration)
    calibration: np.ndarray | None = None

    @property
    def hidden(self) -> np.ndarray:
        """[n_users] bool: users whose profile labels training never reads."""
        return self.holdout if self.calibration is None else self.holdout | self.calibration

    @property
    def warm_items(self) -> np.ndarray:
        """Indices of the real items that are not cold (the usual protocol's catalogue)."""
        return np.flatnonzero(~self.cold_items[FIRST_ID:]) + FIRST_ID

    def trained(self) -> tuple[np.ndarray, np.ndarray]:
        """([n_items], [n_users] bool): ids that have at least one training event."""
        if self.trained_ids is not None:
            return self.trained_ids
        train = self.part == TRAIN
        return (
            np.bincount(self.item[train], minlength=self.n_items) > 0,
            np.bincount(self.user[train], minlength=self.n_users) > 0,
        )

    def events(self, part: int) -> np.ndarray:
        """Flat indices of the interactions in one part."""
        return np.flatnonzero(self.part == part)

    def first_events(self, part: int, users: np.ndarray | None = None) -> np.ndarray:
        """Flat index of each user's first interaction in `part` (optionally of `users` only)."""
        idx = self.events(part)
        idx = idx[np.unique(self.user[idx], return_index=True)[1]]
        return idx if users is None else idx[np.isin(self.user[idx], users)]

    def history(self, idx: np.ndarray, length: int, first: int = 0) -> np.ndarray:
        """[E, L] items strictly before each event, left-padded with PAD (most recent last).
        With `first` > 0: only the user's first `first` interactions (a new user's view)."""
        if first:
            before = np.minimum(first, self.position[idx])[:, None]  # [E, 1]
            offsets = np.arange(min(first, length))[None, :] - min(first, length) + before
            start = (idx - self.position[idx])[:, None]
            valid = offsets >= 0
            source = start + np.where(valid, offsets, 0)
        else:
            return windows(self.item, self.position, idx, length)
        items = np.where(valid, self.item[np.where(valid, source, 0)], PAD).astype(np.int64)
        return np.pad(items, ((0, 0), (length - items.shape[1], 0)), constant_values=PAD)

    def interacted(self, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        """Whether each (user, item) pair occurs anywhere in the log (same shapes in and out)."""
        return seen_pairs(self.pair_keys, self.n_items, users, items)


def seen_pairs(
    pair_keys: np.ndarray, n_items: int, users: np.ndarray, items: np.ndarray
) -> np.ndarray:
    """Whether each (user, item) pair is among `pair_keys` (sorted user * n_items + item)."""
    query = users.astype(np.int64) * n_items + items
    found = np.searchsorted(pair_keys, query).clip(max=len(pair_keys) - 1)
    return pair_keys[found] == query


def windows(item: np.ndarray, position: np.ndarray, idx: np.ndarray, length: int) -> np.ndarray:
    """[E, L] int64: the `length` items strictly before each event `idx` of the flat arrays
    `item` / `position` (grouped by user, chronological), left-padded with PAD."""
    offsets = np.arange(-length, 0)  # [L]
    source = idx[:, None] + offsets  # [E, L] flat index of each history slot
    valid = position[idx][:, None] + offsets >= 0
    return np.where(valid, item[np.where(valid, source, 0)], PAD).astype(np.int64)


def build_log(
    tables: Tables,
    users: Vocab,
    items: Vocab,
    tasks: Sequence[TaskSpec],
    holdout_fraction: float,
    seed: int,
    cold_fraction: float = 0.0,
    cold_min_interactions: int = 5,
    fold: tuple[int, int] | None = None,
    calibration_fraction: float = 0.0,
) -> Log:
    """Sort, split and label every interaction; pick the profile-holdout users (`fold` =
    (fold, n_folds): that fold of `profile_folds`), the calibration users (a fixed random
    `calibration_fraction` of the others) and the cold items."""
    inter = tables.interactions.assign(
        _user=users.encode(tables.interactions["user_id"]),
        _item=items.encode(tables.interactions["item_id"]),
    )
    counts = np.bincount(inter["_item"].to_numpy(), minlength=items.size)
    cold_items = pick_cold_items(counts, cold_fraction, cold_min_interactions, seed)
    is_cold = cold_items[inter["_item"].to_numpy()]
    inter = pd.concat(
        [
            part.sort_values(["_user", "timestamp", "item_id"], kind="stable")
            for part in (inter[~is_cold], inter[is_cold])
        ],
        ignore_index=True,
    )
    n_warm = int((~is_cold).sum())
    position, part = split_parts(inter["_user"].to_numpy()[:n_warm])
    n_cold = len(inter) - n_warm
    position = np.r_[position, np.zeros(n_cold, dtype=position.dtype)]
    part = np.r_[part, np.full(n_cold, COLD, dtype=np.int8)]
    user = inter["_user"].to_numpy()
    profile, holdout = user_profiles(tables.users, users, tasks, holdout_fraction, seed, fold)
    item = inter["_item"].to_numpy()
    return Log(
        user=user,
        item=item,
        position=position,
        part=part,
        item_labels={
            t.name: item_labels(t, inter) for t in tasks if t.level == "item" and t.column
        },
        user_labels=profile,
        holdout=holdout,
        n_users=users.size,
        n_items=items.size,
        pair_keys=np.unique(user.astype(np.int64) * items.size + item),
        cold_items=cold_items,
        calibration=(
            calibration_users(holdout, calibration_fraction, seed) if calibration_fraction else None
        ),
    )


def whole_log(tables: Tables, users: Vocab, items: Vocab, tasks: Sequence[TaskSpec]) -> Log:
    """Every interaction as a training event, in each user's whole chronological sequence, and
    every user's profile labels read (no validation, test, cold item or holdout user)."""
    log = build_log(tables, users, items, tasks, holdout_fraction=0.0, seed=0)
    return replace(log, part=np.full(len(log.part), TRAIN, dtype=np.int8))


def pick_cold_items(counts: np.ndarray, fraction: float, min_count: int, seed: int) -> np.ndarray:
    """[n_items] bool: a fixed random `fraction` of the items with >= `min_count` interactions
    (`counts` per item index)."""
    eligible = np.flatnonzero(counts >= min_count)
    picked = np.random.default_rng([seed, 1]).permutation(eligible)
    cold_items = np.zeros(len(counts), dtype=bool)
    cold_items[picked[: round(fraction * len(eligible))]] = True
    return cold_items


def split_parts(user: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(position, part) of each interaction of `user` (grouped by user, chronological): the
    0-based place in the user's sequence and TRAIN | VALID | TEST."""
    starts = np.flatnonzero(np.r_[True, user[1:] != user[:-1]])
    counts = np.diff(np.r_[starts, len(user)])
    position = np.arange(len(user)) - np.repeat(starts, counts)
    n = np.repeat(counts, counts)
    n_eval = np.maximum(1, n // 10)
    part = np.where(
        position >= n - n_eval, TEST, np.where(position >= n - 2 * n_eval, VALID, TRAIN)
    )
    part[n < 3] = TRAIN
    return position, part.astype(np.int8)


def user_profiles(
    users_table: pd.DataFrame,
    users: Vocab,
    tasks: Sequence[TaskSpec],
    holdout_fraction: float,
    seed: int,
    fold: tuple[int, int] | None = None,
) -> tuple[dict[str, Labels], np.ndarray]:
    """Per user index: each user task's labels, and the profile-holdout users ([n_users] bool):
    a fixed random `holdout_fraction` of them, or fold `fold[0]` of `profile_folds(.., fold[1])`."""
    rows = users.encode(users_table["user_id"])
    profile = {
        t.name: _by_index(user_labels(t, users_table), rows, users.size)
        for t in tasks
        if t.level == "user"
    }
    if fold is None:
        order = np.random.default_rng(seed).permutation(len(users.ids))
        chosen = order[: round(holdout_fraction * len(users.ids))] + FIRST_ID
    else:
        chosen = profile_folds(users.size, fold[1], seed)[fold[0]]
    holdout = np.zeros(users.size, dtype=bool)
    holdout[np.asarray(chosen, dtype=np.int64)] = True
    return profile, holdout


def calibration_users(holdout: np.ndarray, fraction: float, seed: int) -> np.ndarray:
    """[n_users] bool: a fixed random `fraction` of the real users outside the holdout."""
    others = np.flatnonzero(~holdout[FIRST_ID:]) + FIRST_ID
    chosen = np.random.default_rng([seed, 4]).permutation(others)[: round(fraction * len(others))]
    out = np.zeros(len(holdout), dtype=bool)
    out[chosen] = True
    return out


def fold_of(cfg: EvalConfig) -> tuple[int, int] | None:
    """(fold, n_folds) of a k-fold profile holdout, None for the holdout_fraction one."""
    return (cfg.fold, cfg.n_folds) if cfg.n_folds else None


def profile_folds(n_users: int, n_folds: int, seed: int) -> list[np.ndarray]:
    """The real user indices (vocabulary size `n_users`, PAD and UNK excluded) cut into
    `n_folds` folds of a fixed random order, sizes within one: every user in exactly one fold.
    The order is the one the `holdout_fraction` holdout takes its first users from."""
    order = np.random.default_rng(seed).permutation(n_users - FIRST_ID) + FIRST_ID
    return np.array_split(order.astype(np.int64), n_folds)


def evaluation_users(n_users: int, max_users: int, seed: int) -> np.ndarray:
    """[n_users] bool: the users whose events are evaluated (`eval.max_users`): every real one
    with max_users = 0, else a fixed random `max_users` of them."""
    keep = np.zeros(n_users, dtype=bool)
    real = np.arange(FIRST_ID, n_users)
    if max_users <= 0 or max_users >= len(real):
        keep[real] = True
    else:
        keep[np.random.default_rng([seed, 2]).choice(real, size=max_users, replace=False)] = True
    return keep


def _by_index(labels: Labels, rows: np.ndarray, size: int) -> Labels:
    """Re-index per-table-row labels by vocabulary index (PAD/UNK rows unlabelled)."""
    values = np.zeros((size, *labels.values.shape[1:]), dtype=labels.values.dtype)
    mask = np.zeros(size, dtype=bool)
    values[rows] = labels.values
    mask[rows] = labels.mask
    return Labels(values, mask)
