"""k-fold profile holdout: the folds, what each fold's model may read, the bootstrap intervals,
and `python -m training crossval` end to end on the planted synthetic log."""

from __future__ import annotations

import json
from math import erf, sqrt

import numpy as np
import pytest

from service.artifact import FIRST_ID, TaskSpec
from tests.conftest import TINY, tiny_config
from training.__main__ import main
from training.data.prepare import MANIFEST
from training.data.samples import Events
from training.data.split import profile_folds
from training.evaluation.bootstrap import intervals
from training.evaluation.evaluate import Scored, ScoredSets, scored_metrics
from training.fit.epoch import epoch_batches
from training.pipeline.prepare import prepare
from training.pipeline.run import new_model

CLICK = TaskSpec(name="click", level="item", kind="binary")


def test_folds_partition_the_users() -> None:
    folds = profile_folds(943 + FIRST_ID, 5, 1234)
    together = np.concatenate(folds)
    assert sorted(together.tolist()) == list(range(FIRST_ID, 943 + FIRST_ID))
    assert [len(f) for f in folds] == [189, 189, 189, 188, 188]
    again, other = profile_folds(945, 5, 1234), profile_folds(945, 5, 1)
    assert all(np.array_equal(a, b) for a, b in zip(folds, again, strict=True))
    assert not np.array_equal(folds[0], other[0])


def test_fold_0_of_5_is_the_default_holdout() -> None:
    default = prepare(tiny_config(), "synthetic").log.holdout
    fold = prepare(tiny_config("eval.n_folds=5", "eval.fold=0"), "synthetic").log.holdout
    assert np.array_equal(default, fold)


def test_each_fold_trains_without_its_holdout_labels() -> None:
    seen_holdouts = []
    for fold in range(3):
        cfg = tiny_config("eval.n_folds=3", f"eval.fold={fold}")
        data = prepare(cfg, "synthetic")
        holdout = data.log.holdout
        expected = profile_folds(data.log.n_users, 3, 1234)[fold]
        assert np.array_equal(np.flatnonzero(holdout), np.sort(expected))
        seen_holdouts.append(np.flatnonzero(holdout))
        model = new_model(cfg, data)
        rng = np.random.default_rng(0)
        source, _ = epoch_batches(model, data.log, cfg, rng, 1, _alone(), None, 0)
        labelled = 0
        for batch in source:
            users = batch.inputs["user_id"].numpy()
            for task in ("gender", "age", "occupation"):
                mask = batch.masks[task].numpy()
                assert not (mask & holdout[users]).any(), f"fold {fold} trains on a holdout label"
                labelled += int(mask.sum())
        assert labelled > 0, "the other folds' labels are trained on"
    assert len(np.unique(np.concatenate(seen_holdouts))) == sum(map(len, seen_holdouts))


def _alone():
    from training.distributed import ALONE

    return ALONE


def _clustered_auc_sample(rng: np.random.Generator, n_users: int, d: float, spread: float):
    """Per user 4 events of 1 positive and 4 negatives; scores N(d, 1) and N(0, 1) plus a
    per-user offset N(0, spread) shared by all of a user's scores: correlated within users."""
    users = np.repeat(np.arange(n_users), 4)
    offset = rng.normal(0, spread, n_users)[users][:, None]
    scores = rng.normal(0, 1, (len(users), 5)) + offset
    scores[:, 0] += d
    events = Events(np.arange(len(users)), np.zeros((len(users), 5), dtype=np.int64))
    return ScoredSets(items=Scored(events, {"click": scores})), users


def _click_auc(users: np.ndarray):
    def metrics(scored: ScoredSets) -> dict[str, float]:
        return scored_metrics(None, scored, [CLICK], 10)  # type: ignore[arg-type]

    return metrics, (lambda part: users[part.events.index])


def test_bootstrap_interval_covers_a_known_auc() -> None:
    # A positive of user a against a negative of user b: N(d, 1 + 2 spread^2) above 0.
    d, spread = 0.8, 0.7
    truth = 0.5 * (1 + erf(d / sqrt(2 + 2 * spread**2) / sqrt(2)))
    rng = np.random.default_rng(0)
    covered, wrong_covered, widths = 0, 0, []
    for trial in range(40):
        scored, users = _clustered_auc_sample(rng, 150, d, spread)
        metrics, user_of = _click_auc(users)
        found = intervals([scored], user_of, metrics, n_resamples=200, seed=trial)["click_auc"]
        covered += found.low <= truth <= found.high
        wrong_covered += found.low <= truth + 0.06 <= found.high
        widths.append(found.high - found.low)
    assert covered >= 32, f"a 95% interval covered the true AUC {truth:.3f} {covered}/40 times"
    assert wrong_covered <= 20, "the intervals are too wide to tell 0.06 apart"
    # resampling users, not events: the interval is wider than the events' own binomial spread
    assert np.mean(widths) > 2 * 1.96 * sqrt(truth * (1 - truth) / (150 * 4 * 4)) * 0.9


def test_a_stratified_figure_is_the_user_weighted_mean_of_the_strata() -> None:
    rng = np.random.default_rng(1)
    good, users_a = _clustered_auc_sample(rng, 100, 2.0, 0.0)
    bad, users_b = _clustered_auc_sample(rng, 50, 0.0, 0.0)
    users = np.r_[users_a, users_b + 100]
    shifted = ScoredSets(
        items=Scored(
            Events(bad.items.events.index + len(users_a), bad.items.events.candidates),
            bad.items.outputs,
        )
    )
    metrics, user_of = _click_auc(users)
    found = intervals([good, shifted], user_of, metrics, n_resamples=100)["click_auc"]
    expected = (100 * metrics(good)["click_auc"] + 50 * metrics(shifted)["click_auc"]) / 150
    assert found.value == pytest.approx(expected)
    assert found.low < found.value < found.high


def test_crossval_on_the_planted_log(tmp_path) -> None:
    args = ["crossval", "--data", "synthetic", "--folds", "3", "--jobs", "2", "--resamples", "50"]
    assert main([*args, "--out", str(tmp_path), "--quiet", *(f"--{o}" for o in TINY)]) == 0

    raw = json.loads((tmp_path / "crossval.json").read_text())
    assert raw["n_users"] == 200
    assert [f["n_holdout"] for f in raw["folds"]] == [67, 67, 66]
    figures = raw["figures"]
    model, anchor = figures["hydrarec"], figures["logistic regression"]
    for name in ("gender_auc", "age_accuracy", "occupation_logloss", "occupation_ece"):
        f = model[name]
        assert f["low"] <= f["value"] <= f["high"] or name.endswith("_ece")
    # the profile figure is the user-weighted mean of each fold model on its own users
    sizes = np.array([f["n_holdout"] for f in raw["folds"]])
    per_fold = np.array([f["metrics"]["age_accuracy"] for f in raw["folds"]])
    assert model["age_accuracy"]["value"] == pytest.approx(np.average(per_fold, weights=sizes))
    # the planted log writes gender into the items a user watches: the anchor must find it
    assert anchor["gender_auc"]["value"] > 0.85
    assert "click_auc" not in anchor
    assert {"hr@10", "cold_item_click_auc", "like_auc"} <= set(model)
    labelled = prepare(tiny_config(), "synthetic").log.user_labels["gender"].mask.sum()
    assert sum(raw["calibration"]["hydrarec"]["gender"]["count"]) == labelled < 200
    text = (tmp_path / "crossval.md").read_text()
    assert "| gender_auc |" in text
    assert "logistic regression" in text
    assert (tmp_path / "crossval.png").stat().st_size > 10_000


def test_crossval_rejects_what_it_cannot_run(capsys, tmp_path) -> None:
    assert main(["crossval", "--folds", "1", "--data", "synthetic"]) == 2
    assert "error: --folds must be >= 2" in capsys.readouterr().err
    prepared = tmp_path / "prep"
    prepared.mkdir()
    (prepared / MANIFEST).write_text("{}")
    assert main(["crossval", "--data", str(prepared)]) == 2
    assert "crossval needs the tables" in capsys.readouterr().err
    assert main(["crossval", "--eval.n_folds=1"]) == 2
    assert "eval.n_folds" in capsys.readouterr().err
