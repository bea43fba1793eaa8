"""The content popularity baseline's design matrix: a numeric feature's decile indicators."""

from __future__ import annotations

import numpy as np

from service.artifact import UNK
from training.data.content import ContentInput
from training.evaluation.cold import N_BINS, design_matrix


def test_numeric_features_get_one_decile_indicator_each_and_none_when_missing() -> None:
    values = np.linspace(-1.0, 1.0, 100)
    known = np.ones(100)
    known[[3, 50]] = 0.0  # missing: the value column reads 0, the flag column 1
    year = np.stack([values * known, 1.0 - known], axis=1)
    x = design_matrix(100, {"year": year}, [ContentInput("year", "numeric", width=2)])
    hot = x[:, 3:]
    assert x.shape == (100, 1 + 2 + N_BINS)
    assert hot[known == 1].sum(axis=1).tolist() == [1.0] * 98
    assert hot[known == 0].sum() == 0
    bins = hot[known == 1].argmax(axis=1)
    assert (np.diff(bins) >= 0).all()
    assert bins[0] == 0
    assert bins[-1] == N_BINS - 1
    assert np.bincount(bins, minlength=N_BINS).min() >= 9  # deciles: about 10 values each


def test_tokens_are_indicators_without_pad_and_unknown() -> None:
    genres = np.array([[2, 3], [UNK, 0], [4, 0]])
    x = design_matrix(3, {"genres": genres}, [ContentInput("genres", "multi_categorical", 5, 2)])
    assert x[:, 1:].tolist() == [[1, 1, 0], [0, 0, 0], [0, 0, 1]]
