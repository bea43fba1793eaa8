"""score = sum of weight x probability; top_k keeps the best, ties in request order."""

from __future__ import annotations

import numpy as np

from service.predictor import all_finite
from service.ranking import score, top_k


def test_score_is_the_weighted_sum_of_the_named_tasks() -> None:
    outputs = {"click": np.array([0.1, 0.9], np.float32), "like": np.array([0.8, 0.2], np.float32)}
    np.testing.assert_allclose(score(outputs, {"click": 1.0, "like": 2.0}, 2), [1.7, 1.3])
    np.testing.assert_allclose(score(outputs, {"click": 1.0}, 2), [0.1, 0.9])
    np.testing.assert_allclose(score(outputs, {}, 2), [0.0, 0.0])


def test_top_k_orders_by_score_and_keeps_ties_in_input_order() -> None:
    scores = np.array([0.5, 0.9, 0.5, 0.1, 0.9])
    assert top_k(scores, 10).tolist() == [1, 4, 0, 2, 3]
    assert top_k(scores, 2).tolist() == [1, 4]


def test_all_finite_finds_nan_and_infinity_anywhere() -> None:
    values = np.linspace(0, 1, 100, dtype=np.float32)
    assert all_finite(values)
    assert all_finite(np.full(100, np.finfo(np.float32).max, dtype=np.float32))  # no overflow
    for bad in (np.nan, np.inf, -np.inf):
        broken = values.copy()
        broken[57] = bad
        assert not all_finite(broken)
