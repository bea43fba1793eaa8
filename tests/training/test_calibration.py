"""Temperature scaling of the profile heads: the temperature is found where it is known, the
calibration users are hidden from training like the holdout, and a calibrated model serves it."""

from __future__ import annotations

import json

import numpy as np
import pytest
from scipy.special import softmax

from harness.training import training_cli
from tests.conftest import TINY, tiny_config
from training.config import ConfigError
from training.data.samples import Events, make_batch
from training.data.split import VALID, calibration_users
from training.evaluation.evaluate import model_predictor
from training.fit.calibration import fit_temperature, log_loss_at
from training.fit.train import fit, load_checkpoint
from training.pipeline.prepare import prepare
from training.pipeline.run import new_model


def test_the_temperature_of_overconfident_probabilities_is_recovered() -> None:
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(20_000, 5))
    labels = np.array([rng.choice(5, p=p) for p in softmax(logits, axis=1)])
    sure = softmax(3.0 * logits, axis=1)  # the truth, three times too sharp
    temperature = fit_temperature(sure, labels)
    assert temperature == pytest.approx(3.0, rel=0.05)
    log_sure = np.log(sure)
    assert log_loss_at(log_sure, labels, temperature) < log_loss_at(log_sure, labels, 1.0) - 0.1


def test_calibration_users_are_a_share_of_the_others() -> None:
    holdout = np.zeros(1002, dtype=bool)
    holdout[2:202] = True  # indices 0 and 1 are PAD and UNK
    chosen = calibration_users(holdout, 0.1, seed=0)
    assert chosen.sum() == 80  # 10% of the 800 users outside the holdout
    assert not (chosen & holdout).any()
    assert not chosen[:2].any()
    assert np.array_equal(chosen, calibration_users(holdout, 0.1, seed=0))


@pytest.fixture(scope="module")
def calibrated():
    cfg = tiny_config("optim.epochs=2", "optim.calibration_users=0.2")
    data = prepare(cfg, "synthetic")
    model = new_model(cfg, data)
    history = fit(model, data.log, data.valid, cfg, progress=False)
    return cfg, data, model, history


def test_training_never_reads_the_calibration_users_labels(calibrated) -> None:
    cfg, data, _, _ = calibrated
    log = data.log
    assert log.calibration is not None
    assert log.calibration.any()
    assert not (log.calibration & log.holdout).any()
    index = log.first_events(VALID, users=np.flatnonzero(log.calibration))
    events = Events(index, log.item[index][:, None])
    hidden = make_batch(log, events, data.tasks, 10, hide_holdout=True)
    shown = make_batch(log, events, data.tasks, 10, hide_holdout=False)
    assert not hidden.masks["gender"].any()
    known = log.user_labels["gender"].mask[log.user[index]]
    assert known.any()
    assert np.array_equal(shown.masks["gender"].numpy(), known)


def test_each_multiclass_head_gets_the_temperature_that_lowers_its_log_loss(calibrated) -> None:
    cfg, data, model, history = calibrated
    log = data.log
    users = np.flatnonzero(log.calibration)
    assert set(history.calibration) == {"gender", "age", "occupation"}
    index = log.first_events(VALID, users=users)
    outputs = model_predictor(model, log, model.tasks, cfg.network.history_length)(
        Events(index, log.item[index][:, None])
    )
    for name, record in history.calibration.items():
        assert float(model.heads[name].temperature) == pytest.approx(record["temperature"])
        assert record["temperature"] != 1.0
        assert record["logloss_after"] <= record["logloss_before"]
        known = log.user_labels[name]
        use = known.mask[log.user[index]]
        labels = known.values[log.user[index]][use]
        served = -np.log(outputs[name][use][np.arange(use.sum()), labels]).mean()
        assert served == pytest.approx(record["logloss_after"], rel=1e-4)


def test_a_calibrated_model_is_exported_and_reported(tmp_path) -> None:
    run = training_cli(
        "train",
        "--data",
        "synthetic",
        "--out",
        str(tmp_path / "models"),
        "--reports",
        str(tmp_path / "reports"),
        "--quiet",
        *(f"--{o}" for o in TINY),
        "--optim.calibration_users=0.2",
    )
    assert run.returncode == 0, run.stderr
    report = json.loads((tmp_path / "reports/synthetic/1/report.json").read_text())
    assert set(report["calibration"]) == {"gender", "age", "occupation"}
    assert (tmp_path / "models/synthetic/1/model.onnx").exists()  # parity held on export
    # the published refit learned every user's labels, and serves the evaluated temperatures
    assert report["fit"]["refit"]
    refit, _ = load_checkpoint(tmp_path / "reports/synthetic/1/checkpoint.pt")
    for name, record in report["calibration"].items():
        served = float(refit.heads[name].temperature)
        assert served == pytest.approx(record["temperature"], rel=1e-6)
        assert served != 1.0


def test_calibration_needs_the_tables() -> None:
    from training.data.prepared import Shards

    cfg = tiny_config("optim.calibration_users=0.1")
    data = prepare(cfg, "synthetic")
    shards = Shards.__new__(Shards)  # any prepared folder is refused before it is read
    with pytest.raises(ConfigError, match="calibration_users needs the tables"):
        fit(new_model(cfg, data), data.log, data.valid, cfg, progress=False, shards=shards)
