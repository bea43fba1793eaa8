"""`optim.lr_schedule`: the learning rate of each epoch, set on the optimizer and recorded."""

from __future__ import annotations

import math

import pytest

from tests.conftest import tiny_config
from training.config import ConfigError
from training.fit.schedule import epoch_lr
from training.fit.train import fit
from training.pipeline.prepare import prepare
from training.pipeline.run import new_model


def test_a_constant_schedule_keeps_the_rate() -> None:
    assert [epoch_lr(0.01, "constant", e, 5) for e in range(1, 6)] == [0.01] * 5


def test_the_cosine_schedule_falls_from_the_rate_towards_zero() -> None:
    rates = [epoch_lr(1e-3, "cosine", e, 20) for e in range(1, 21)]
    assert rates[0] == 1e-3
    assert all(a > b for a, b in zip(rates, rates[1:], strict=False)), "strictly falling"
    assert rates[10] == pytest.approx(5e-4), "half the rate half way"
    assert 0 < rates[-1] < 1e-5, "the last epoch still learns, barely"
    assert rates[5] == pytest.approx(1e-3 * 0.5 * (1 + math.cos(math.pi * 5 / 20)))


def test_training_steps_at_the_scheduled_rate_and_records_it() -> None:
    cfg = tiny_config("optim.epochs=3", "optim.patience=3", "optim.lr_schedule=cosine")
    data = prepare(cfg, "synthetic")
    model = new_model(cfg, data)

    history = fit(model, data.log, data.valid, cfg, progress=False)

    expected = [epoch_lr(cfg.optim.lr, "cosine", e, 3) for e in (1, 2, 3)]
    assert [e["lr"] for e in history.epochs] == expected
    assert expected[0] > expected[1] > expected[2]


def test_an_unknown_schedule_is_refused_by_name() -> None:
    with pytest.raises(ConfigError, match="optim.lr_schedule must be one of"):
        tiny_config("optim.lr_schedule=linear")
