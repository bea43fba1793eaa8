"""Temperature scaling of the profile heads (Guo et al., ICML 2017, https://arxiv.org/abs/1706.04599).

A user head learns from the training users' labels and is asked about users it never saw, so its
probabilities come out too sure of themselves (or too timid) by a margin that accuracy does not
show and log loss does. With `optim.calibration_users` > 0 a fixed random share of the training
users keeps its profile labels hidden in training, exactly like the holdout users
(`Log.calibration`); after the fit, each multiclass user task gets the one temperature T > 0
that minimises the log loss of softmax(logits / T) on those users, read from their training
history as the profile test set reads the holdout's. T divides the head's logits
(`UserHead.temperature`), so the exported graph serves the calibrated probabilities and the
ranking of classes, hence accuracy and AUC, does not change. A refit (training.fit.refit) learns
every user's labels, so it has nobody to calibrate on: it takes the evaluated run's temperatures.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from scipy.optimize import minimize_scalar
from scipy.special import log_softmax

from training.data.samples import Events
from training.data.split import VALID, Log
from training.evaluation.evaluate import model_predictor
from training.network.heads import UserHead
from training.network.recommender import MultiTaskRecommender

T_RANGE = (0.05, 20.0)  # temperatures searched
EPS = 1e-12


def log_loss_at(log_probs: np.ndarray, labels: np.ndarray, temperature: float) -> float:
    """Mean log loss of softmax(log_probs / temperature) against `labels`."""
    scaled = log_softmax(log_probs / temperature, axis=1)
    return float(-scaled[np.arange(len(labels)), labels].mean())


def fit_temperature(probs: np.ndarray, labels: np.ndarray) -> float:
    """The temperature in T_RANGE that minimises the log loss of `probs` ([n, K] rows of a
    softmax: their logs are the logits up to a constant per row) rescaled, on `labels`."""
    log_probs = np.log(np.clip(probs, EPS, 1.0))
    found = minimize_scalar(
        lambda log_t: log_loss_at(log_probs, labels, float(np.exp(log_t))),
        bounds=np.log(T_RANGE),
        method="bounded",
    )
    return float(np.exp(found.x))


def calibrate(
    model: MultiTaskRecommender, log: Log, history_length: int
) -> dict[str, dict[str, Any]]:
    """Fit and set the temperature of each multiclass user head on the log's calibration
    users (in place); per task: the temperature, the users it was fitted on and their log loss
    before and after."""
    assert log.calibration is not None, "calibration needs Log.calibration users"
    tasks = [t for t in model.tasks if t.level == "user" and t.kind == "multiclass"]
    index = log.first_events(VALID, users=np.flatnonzero(log.calibration))
    outputs = model_predictor(model, log, tasks, history_length)(
        Events(index, log.item[index][:, None])
    )
    users = log.user[index]
    out = {}
    for t in tasks:
        known = log.user_labels[t.name]
        use = known.mask[users]
        probs, labels = outputs[t.name][use], known.values[users][use]
        if not len(labels):
            continue
        temperature = fit_temperature(probs, labels)
        log_probs = np.log(np.clip(probs, EPS, 1.0))
        head = model.heads[t.name]
        assert isinstance(head, UserHead), "user tasks have user heads"
        head.temperature.fill_(temperature)
        out[t.name] = {
            "temperature": temperature,
            "users": int(len(labels)),
            "logloss_before": log_loss_at(log_probs, labels, 1.0),
            "logloss_after": log_loss_at(log_probs, labels, temperature),
        }
    return out


def set_temperatures(
    model: MultiTaskRecommender, temperatures: dict[str, float]
) -> dict[str, dict[str, Any]]:
    """Set each named user head's temperature (a refit takes the evaluated run's); per task,
    the temperature set."""
    for name, temperature in temperatures.items():
        head = model.heads[name]
        assert isinstance(head, UserHead), "user tasks have user heads"
        head.temperature.fill_(temperature)
    return {
        name: {"temperature": t, "from": "the evaluated run"} for name, t in temperatures.items()
    }
