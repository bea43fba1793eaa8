"""Metric functions in plain numpy (AUC with ties, log loss, calibration error, accuracy,
macro-F1, HR/NDCG@k)."""

from __future__ import annotations

import numpy as np

EPS = 1e-7
ECE_BINS = 15  # equal-width confidence bins of the calibration error (Guo et al.'s)


def auc(labels: np.ndarray, scores: np.ndarray) -> float:
    """ROC AUC as the Mann-Whitney statistic with average ranks for ties; NaN if one class."""
    labels = labels.astype(bool)
    n_pos, n_neg = int(labels.sum()), int((~labels).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    _, inverse, counts = np.unique(scores, return_inverse=True, return_counts=True)
    upper = np.cumsum(counts)  # rank of the last element of each tie group (1-based)
    ranks = (upper - (counts - 1) / 2.0)[inverse]
    return float((ranks[labels].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def log_loss(labels: np.ndarray, probs: np.ndarray) -> float:
    """Mean binary cross-entropy of probabilities."""
    p = np.clip(probs, EPS, 1 - EPS)
    return float(-np.mean(labels * np.log(p) + (1 - labels) * np.log(1 - p)))


def multiclass_log_loss(labels: np.ndarray, probs: np.ndarray) -> float:
    """Mean cross-entropy of class probabilities [N, K] against class indices [N]."""
    picked = probs[np.arange(len(labels)), labels]
    return float(-np.mean(np.log(np.clip(picked, EPS, 1.0))))


def reliability(
    labels: np.ndarray, probs: np.ndarray, n_bins: int = ECE_BINS
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per equal-width bin of confidence (the highest probability of each row of [N, K]): how
    many predictions, the sum of their confidences and how many were right."""
    confidence = probs.max(axis=1)
    correct = (probs.argmax(axis=1) == labels).astype(np.float64)
    bins = np.minimum((confidence * n_bins).astype(np.int64), n_bins - 1)
    return (
        np.bincount(bins, minlength=n_bins),
        np.bincount(bins, weights=confidence, minlength=n_bins),
        np.bincount(bins, weights=correct, minlength=n_bins),
    )


def expected_calibration_error(
    labels: np.ndarray, probs: np.ndarray, n_bins: int = ECE_BINS
) -> float:
    """Top-label ECE (Guo et al. 2017): the mean |accuracy - confidence| over the `reliability`
    bins, weighted by their share of the predictions."""
    count, confidence, correct = reliability(labels, probs, n_bins)
    return float(np.abs(correct - confidence).sum() / max(1, count.sum()))


def accuracy(labels: np.ndarray, predicted: np.ndarray) -> float:
    """Share of exact matches."""
    return float(np.mean(labels == predicted))


def macro_f1(labels: np.ndarray, predicted: np.ndarray, n_classes: int) -> float:
    """Unweighted mean of per-class F1 over the classes present in labels or predictions."""
    scores = []
    for k in range(n_classes):
        tp = np.sum((predicted == k) & (labels == k))
        fp = np.sum((predicted == k) & (labels != k))
        fn = np.sum((predicted != k) & (labels == k))
        if tp + fp + fn:
            scores.append(2 * tp / (2 * tp + fp + fn))
    return float(np.mean(scores))


def hit_rate_and_ndcg(scores: np.ndarray, k: int) -> tuple[float, float]:
    """HR@k and NDCG@k when column 0 of `scores` [E, C] is the one relevant item per row.

    Ties count against the relevant item (a constant scorer gets no credit).
    """
    rank = np.sum(scores[:, 1:] >= scores[:, :1], axis=1)  # 0-based rank of the relevant item
    hit = rank < k
    return float(hit.mean()), float(np.mean(np.where(hit, 1.0 / np.log2(rank + 2.0), 0.0)))
