"""Learning on planted-signal data: a trained model reaches quality an untrained one cannot."""

from __future__ import annotations

import pytest

from tests.conftest import learning_config
from training.evaluation.protocol import evaluate_model
from training.pipeline.prepare import prepare
from training.pipeline.run import new_model

# Thresholds: well above what the untrained model and the baselines reach (asserted below), and
# below what training reaches with any of several seeds (click AUC 0.71-0.76, HR@10 0.47-0.56).
CLICK_AUC, GENDER_AUC, HIT_RATE = 0.68, 0.85, 0.40


@pytest.fixture(scope="module")
def untrained() -> dict[str, float]:
    cfg = learning_config()
    data = prepare(cfg, "synthetic")
    return evaluate_model(new_model(cfg, data).eval(), data, cfg)


def test_trained_model_beats_thresholds_and_baselines(trained) -> None:
    result, _ = trained
    m, b = result.metrics, result.baselines
    assert m["click_auc"] > CLICK_AUC > b["click_auc"]
    assert m["gender_auc"] > GENDER_AUC
    assert m["hr@10"] > HIT_RATE > b["hr@10"]
    assert m["like_auc"] > b["like_auc"]
    assert m["age_accuracy"] > b["age_accuracy"]
    assert m["occupation_accuracy"] > b["occupation_accuracy"]


def test_untrained_model_cannot_reach_the_thresholds(untrained: dict[str, float]) -> None:
    assert untrained["click_auc"] < CLICK_AUC
    assert untrained["gender_auc"] < GENDER_AUC
    assert untrained["hr@10"] < HIT_RATE


def test_training_lowers_the_loss(trained) -> None:
    result, _ = trained
    epochs = result.history.epochs
    assert epochs[-1]["train_loss"] < epochs[0]["train_loss"]
    assert 1 <= result.history.best_epoch <= len(epochs)
