"""Ranking: score = sum over item tasks of weight x probability, then the top k.

The weights come from the request or, when it names none, from the manifest's default formula.
Ties keep the request's candidate order (a stable sort), so a response is deterministic.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np


def score(outputs: Mapping[str, np.ndarray], weights: Mapping[str, float], n: int) -> np.ndarray:
    """[N] weighted sum of the named item-task outputs (each [N]); zeros for no weights."""
    total = np.zeros(n, dtype=np.float64)
    for task, weight in weights.items():
        total += weight * outputs[task].astype(np.float64)
    return total


def top_k(scores: np.ndarray, k: int) -> np.ndarray:
    """Indices of the k highest scores, highest first; ties in input order."""
    return (-scores).argsort(kind="stable")[:k]
