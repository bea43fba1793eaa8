"""Repeated measurements and how they are shown: the median and the range."""

from __future__ import annotations

import statistics
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class Spread:
    """Median and range of repeated measurements."""

    values: tuple[float, ...]

    @property
    def median(self) -> float:
        return statistics.median(self.values)

    def __str__(self) -> str:
        low, high = min(self.values), max(self.values)
        return f"{self.median:,.0f} ({low:,.0f}-{high:,.0f})"


def repeat(measure: Callable[[], float], times: int) -> Spread:
    return Spread(tuple(measure() for _ in range(times)))
