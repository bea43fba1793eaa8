"""Metric functions against hand-computed values."""

from __future__ import annotations

import numpy as np
import pytest

from training.evaluation.metrics import (
    accuracy,
    auc,
    expected_calibration_error,
    hit_rate_and_ndcg,
    log_loss,
    macro_f1,
    multiclass_log_loss,
)


def test_auc_perfect_inverted_and_tied() -> None:
    labels = np.array([0, 0, 1, 1])
    assert auc(labels, np.array([0.1, 0.2, 0.8, 0.9])) == 1.0
    assert auc(labels, np.array([0.9, 0.8, 0.2, 0.1])) == 0.0
    assert auc(labels, np.full(4, 0.5)) == 0.5
    # one of four positive/negative pairs is tied, one is wrong: (2 + 0.5) / 4
    assert auc(labels, np.array([0.1, 0.6, 0.6, 0.9])) == pytest.approx(0.875)


def test_auc_of_one_class_is_nan() -> None:
    assert np.isnan(auc(np.ones(3), np.arange(3.0)))


def test_log_loss_accuracy_macro_f1() -> None:
    assert log_loss(np.array([1.0, 0.0]), np.array([0.5, 0.5])) == pytest.approx(np.log(2))
    assert accuracy(np.array([0, 1, 2]), np.array([0, 1, 1])) == pytest.approx(2 / 3)
    # class 0: f1 1; class 1: tp 1 fp 1 -> 2/3; class 2: tp 0 fn 1 -> 0
    assert macro_f1(np.array([0, 1, 2]), np.array([0, 1, 1]), 3) == pytest.approx(5 / 9)


def test_hit_rate_and_ndcg() -> None:
    scores = np.array(
        [
            [0.9, 0.1, 0.2],  # rank 0
            [0.5, 0.7, 0.1],  # rank 1
            [0.1, 0.5, 0.7],
        ]
    )  # rank 2
    hr, ndcg = hit_rate_and_ndcg(scores, k=2)
    assert hr == pytest.approx(2 / 3)
    assert ndcg == pytest.approx((1 + 1 / np.log2(3)) / 3)
    assert hit_rate_and_ndcg(np.ones((4, 5)), k=4) == (0.0, 0.0), "ties are not hits"


def test_multiclass_log_loss() -> None:
    probs = np.array([[0.5, 0.5, 0.0], [0.25, 0.75, 0.0]])
    expected = -(np.log(0.5) + np.log(0.75)) / 2
    assert multiclass_log_loss(np.array([0, 1]), probs) == pytest.approx(expected)
    assert multiclass_log_loss(np.array([2]), probs[:1]) > 15, "a zero probability is clipped"


def test_expected_calibration_error() -> None:
    # five predictions at confidence 0.6, three right: calibrated
    probs = np.tile([0.6, 0.4], (5, 1))
    assert expected_calibration_error(np.array([0, 0, 0, 1, 1]), probs) == pytest.approx(0.0)
    # all five wrong at 0.6: |0 - 0.6|; plus five right at 1.0 in their own bin: half weight
    wrong = np.ones(5, dtype=np.int64)
    assert expected_calibration_error(wrong, probs) == pytest.approx(0.6)
    both = np.r_[probs, np.tile([1.0, 0.0], (5, 1))]
    assert expected_calibration_error(np.r_[wrong, np.zeros(5, np.int64)], both) == pytest.approx(
        0.3
    )
