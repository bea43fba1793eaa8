"""Confidence intervals by resampling users (the percentile bootstrap).

The unit is the user, not the event: a user's events are correlated (one taste, one history), so
resampling events would understate the spread. Each resample draws as many users as there are,
with replacement, and takes every event of each drawn user in every set (items, ranking, profile)
as often as the user was drawn; a metric's interval is the 2.5th and 97.5th percentile of its
values over the resamples. Cross-validation resamples within each fold (`intervals`' strata).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from training.evaluation.evaluate import Scored, ScoredSets

N_RESAMPLES = 1000
LEVEL = 0.95


@dataclass(frozen=True)
class Interval:
    """A figure on every user, with its bootstrap interval."""

    value: float
    low: float
    high: float

    def to_dict(self) -> dict[str, float]:
        return {"value": self.value, "low": self.low, "high": self.high}


class UserRows:
    """The rows of one set, grouped by user, so a draw of users becomes a draw of rows."""

    def __init__(self, users: np.ndarray, n_users: int) -> None:
        self.order = np.argsort(users, kind="stable")
        self.count = np.bincount(users, minlength=n_users)
        self.start = np.r_[0, np.cumsum(self.count)[:-1]]

    def rows(self, drawn: np.ndarray) -> np.ndarray:
        """Every row of each drawn user, as often as drawn."""
        count = self.count[drawn]
        ends = np.cumsum(count)
        within = np.arange(ends[-1] if len(ends) else 0) - np.repeat(ends - count, count)
        return self.order[np.repeat(self.start[drawn], count) + within]


def intervals(
    strata: Sequence[ScoredSets],
    user_of: Callable[[Scored], np.ndarray],
    metrics: Callable[[ScoredSets], dict[str, float]],
    n_resamples: int = N_RESAMPLES,
    seed: int = 0,
) -> dict[str, Interval]:
    """Every metric of `metrics` with its percentile interval over `n_resamples` resamples of
    the users (`user_of` maps a set's rows to user indices).

    With several strata (cross-validation: each fold's model on its own users), a figure is the
    mean of the strata's figures weighted by their users, and each resample draws users within
    each stratum (as many as it has): an AUC is never computed over the pooled scores of
    different models, whose offsets differ. A figure that is undefined on a stratum or a resample
    (NaN: one class only) is left out of that mean or that resample's values."""
    prepared = [_Stratum(s, user_of) for s in strata]
    weights = np.array([len(p.users) for p in prepared], dtype=np.float64)
    rng = np.random.default_rng(seed)
    values: dict[str, list[float]] = {}
    for _ in range(n_resamples):
        for key, value in _mean([p.resampled(rng, metrics) for p in prepared], weights).items():
            values.setdefault(key, []).append(value)
    tail = 100 * (1 - LEVEL) / 2
    out = {}
    for key, value in _mean([metrics(s) for s in strata], weights).items():
        drawn = np.asarray(values.get(key, []), dtype=np.float64)
        drawn = drawn[~np.isnan(drawn)]
        low, high = np.percentile(drawn, [tail, 100 - tail]) if len(drawn) else (value, value)
        out[key] = Interval(float(value), float(low), float(high))
    return out


class _Stratum:
    """One stratum's sets with their rows grouped by user."""

    def __init__(self, scored: ScoredSets, user_of: Callable[[Scored], np.ndarray]) -> None:
        self.parts = scored.parts()
        users = {name: user_of(part) for name, part in self.parts.items()}
        self.users = np.unique(np.concatenate(list(users.values())))
        n_users = int(self.users.max()) + 1 if len(self.users) else 0
        self.groups = {name: UserRows(u, n_users) for name, u in users.items()}

    def resampled(
        self, rng: np.random.Generator, metrics: Callable[[ScoredSets], dict[str, float]]
    ) -> dict[str, float]:
        """The metrics of one resample of this stratum's users."""
        drawn = rng.choice(self.users, size=len(self.users), replace=True)
        return metrics(
            ScoredSets(**{n: p.take(self.groups[n].rows(drawn)) for n, p in self.parts.items()})
        )


def _mean(figures: Sequence[dict[str, float]], weights: np.ndarray) -> dict[str, float]:
    """Per metric, the weighted mean over the strata where it is defined (NaN where none)."""
    out = {}
    for key in figures[0]:
        value = np.array([f.get(key, np.nan) for f in figures], dtype=np.float64)
        known = ~np.isnan(value)
        out[key] = (
            float(np.average(value[known], weights=weights[known])) if known.any() else np.nan
        )
    return out
