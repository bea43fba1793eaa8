"""The refit study (training.studies.refit_study): the cut, the paired comparison, the whole
command."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from tests.conftest import TINY, tiny_config
from training.__main__ import main
from training.studies.refit_study import DIFFERENCE, HELD_OUT, REFIT, Answers, compare, cut_source


def test_the_cut_keeps_each_users_last_tenth_aside(tmp_path: Path) -> None:
    cfg = tiny_config()
    cut = cut_source("synthetic", cfg.synthetic, tmp_path / "data", [])
    kept = pd.read_parquet(tmp_path / "data" / "interactions.parquet")
    per_user = kept.groupby("user_id").size() + cut.next.groupby("user_id").size()
    aside = cut.next.groupby("user_id").size()
    assert (aside == np.maximum(1, per_user // 10)).all()
    # every interaction is either kept or aside, and the aside ones are the user's own
    total = len(pd.read_parquet(tmp_path / "data" / "interactions.parquet")) + len(cut.next)
    assert total == sum(len(items) for items in cut.touched.values())
    for user, item in cut.next[["user_id", "item_id"]].itertuples(index=False):
        assert item in cut.touched[user]


def _answers(hits: np.ndarray, like: np.ndarray) -> Answers:
    users = np.arange(len(hits)).astype(str)
    labels = np.tile([1, 0], len(hits))  # two events per user: liked, not liked
    return Answers(
        users=users,
        ranking={"hr@k (click)": hits, "ndcg@k (click)": hits / 2},
        event_user=np.repeat(np.arange(len(hits)), 2),
        labels={"like": labels},
        outputs={"like": like},
    )


def test_the_comparison_is_paired_over_users() -> None:
    # Given a held-out model that misses every next item and ranks likes at random, and a
    # refit that hits half of them and ranks every liked event first
    n = 200
    held = _answers(np.zeros(n), np.full(2 * n, 0.5))
    refit = _answers((np.arange(n) % 2).astype(float), np.tile([0.9, 0.1], n))

    # When they are compared
    figures = compare({HELD_OUT: held, REFIT: refit}, n_resamples=200)

    # Then each figure and the difference carry intervals, and the difference is the refit's
    hr = figures["hr@k (click)"]
    assert hr[HELD_OUT]["value"] == 0.0
    assert hr[REFIT]["value"] == 0.5
    assert hr[DIFFERENCE]["value"] == 0.5
    assert 0.0 < hr[DIFFERENCE]["low"] < 0.5 < hr[DIFFERENCE]["high"] < 1.0
    like = figures["like_auc"]
    assert (like[HELD_OUT]["value"], like[REFIT]["value"]) == (0.5, 1.0)
    assert like[DIFFERENCE]["low"] == like[DIFFERENCE]["high"] == 0.5


def test_the_study_runs_end_to_end_and_reports(tmp_path: Path) -> None:
    # Given a tiny config on synthetic data
    flags = [f"--{o}" for o in TINY]

    # When the study runs in process (and once more on the same work folder)
    args = ["refit-study", "--data", "synthetic", "--negatives", "20", "--resamples", "20"]
    args += ["--work", str(tmp_path / "work"), "--out", str(tmp_path / "reports"), "--quiet"]
    assert main([*args, *flags]) == 0
    trained = (tmp_path / "work/reports/next/1/report.json").stat().st_mtime_ns
    assert main([*args, *flags]) == 0

    # Then it reports both models and their difference on every figure, with the timings, and
    # the second run asks the same models again without training them
    results = json.loads((tmp_path / "reports/refit-defaults.json").read_text())
    assert set(results["figures"]) == {
        "hr@k (click)",
        "ndcg@k (click)",
        "hr@k (served score)",
        "ndcg@k (served score)",
        "like_auc",
    }
    for row in results["figures"].values():
        assert set(row) == {HELD_OUT, REFIT, DIFFERENCE}
        assert row[DIFFERENCE]["low"] <= row[DIFFERENCE]["value"] <= row[DIFFERENCE]["high"]
    assert results["fit"]["refit"]
    assert results["users"] == 200
    assert set(results["seconds"]) == {"evaluated", "refit"}
    assert "refit - held out" in (tmp_path / "reports/refit-defaults.md").read_text()
    assert (tmp_path / "reports/refit-defaults.png").stat().st_size > 1000
    assert (tmp_path / "work/reports/next/1/report.json").stat().st_mtime_ns == trained
