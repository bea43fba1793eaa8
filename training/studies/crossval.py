"""`python -m training crossval`: figures that do not hang on one holdout of users.

The users are cut into k fixed random folds (`training.data.split.profile_folds`); fold i's model
is the configured model trained with fold i as the profile holdout (its users' profile labels
hidden in training), in parallel worker processes of one thread each. Every user is held out
exactly once, so every user's profile is scored by the model that never read their labels; the
item figures are taken the same way (each user's test events scored by the model of their fold).
A figure is the mean over the folds, weighted by their users, of each fold model's figure on its
own users (an AUC over the pooled scores of five models would mix their offsets), with a
percentile-bootstrap interval over users resampled within each fold
(`training.evaluation.bootstrap`). The
item figures are also given per fold model on every test event, as mean and spread. Beside the
model, on the same folds and events: the protocol's baselines
(popularity, item like rate, majority class) and the profile tasks' single-task anchor, logistic
regression on the bag of watched items (`training.evaluation.anchors`).
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from multiprocessing import get_context
from typing import Any

import numpy as np
from tqdm import tqdm

from service.artifact import TaskSpec
from training.config import Config, ConfigError
from training.config_file import load_config
from training.data.prepare import is_prepared
from training.data.split import Log
from training.evaluation import cold
from training.evaluation.bootstrap import N_RESAMPLES, Interval, intervals
from training.evaluation.evaluate import (
    Scored,
    ScoredSets,
    baseline_predictor,
    model_predictor,
    score,
    scored_metrics,
)
from training.evaluation.metrics import ECE_BINS, reliability
from training.studies.experiment import Base

N_FOLDS = 5
MODEL, BASELINE, ANCHOR = "hydrarec", "baseline", "logistic regression"


def fold_config(base: Base, fold: int, n_folds: int) -> Config:
    """The config of fold `fold`: the base with that fold as the profile holdout."""
    return load_config(
        base.config, [*base.overrides, f"--eval.n_folds={n_folds}", f"--eval.fold={fold}"]
    )


def check_source(source: str, n_folds: int) -> None:
    """Reject what crossval cannot run before any work."""
    if n_folds < 2:
        raise ConfigError("--folds must be >= 2")
    if is_prepared(source):
        raise ConfigError(
            f"{source} is a prepared folder, whose profile holdout was fixed when it was prepared;"
            " crossval needs the tables (a data folder, movielens or synthetic)"
        )


def run_fold(base: Base, source: str, fold: int, n_folds: int) -> dict[str, Any]:
    """Train fold `fold`'s model; score the test (and cold-item) sets with it and with the
    baselines, keeping the rows of the fold's own users, and the fold's users with the anchor;
    also the model's figures on every test event. Runs in a worker process."""

    from training.evaluation.anchors import profile_anchor
    from training.evaluation.protocol import evaluate_model
    from training.pipeline.run import fit_once

    cfg = fold_config(base, fold, n_folds)
    run = fit_once(cfg, source)
    data, model, history, seconds = run.data, run.model, run.history, run.seconds
    mine = own_users(data.log)
    predict = model_predictor(model, data.log, data.tasks, cfg.network.history_length)
    baseline = baseline_predictor(data.log, data.tasks)
    scored = {
        MODEL: {"test": mine(score(data.test, predict))},
        BASELINE: {"test": mine(score(data.test, baseline))},
    }
    if data.cold_items is not None:
        content = cold.content_baseline(
            data.log, data.tasks, data.content.arrays, data.content.inputs
        )
        scored[MODEL]["cold"] = mine(score(data.cold_items, predict))
        scored[BASELINE]["cold"] = mine(score(data.cold_items, content))
    profile = data.test.profile
    assert profile is not None, "the test sets always have a profile set"
    anchor = Scored(profile, profile_anchor(data.log, data.tasks, profile, cfg.optim.seed))
    scored[ANCHOR] = {"test": ScoredSets(profile=anchor)}
    return {
        "fold": fold,
        "n_holdout": int(data.log.holdout.sum()),
        "metrics": evaluate_model(model, data, cfg),
        "scored": scored,
        "seconds": seconds,
        "epochs": len(history.epochs),
        "best_epoch": history.best_epoch,
    }


def own_users(log: Log) -> Callable[[ScoredSets], ScoredSets]:
    """ScoredSets -> the same sets cut to the rows of the log's profile-holdout users."""

    def cut(part: Scored | None) -> Scored | None:
        if part is None:
            return None
        return part.take(np.flatnonzero(log.holdout[log.user[part.events.index]]))

    return lambda sets: ScoredSets(cut(sets.items), cut(sets.ranking), cut(sets.profile))


def run_folds(
    base: Base, source: str, n_folds: int, jobs: int, progress: bool = True
) -> list[dict[str, Any]]:
    """Every fold, `jobs` at a time; results in fold order."""
    with ProcessPoolExecutor(max_workers=jobs, mp_context=get_context("spawn")) as pool:
        futures = {pool.submit(run_fold, base, source, i, n_folds): i for i in range(n_folds)}
        done = {}
        for future in tqdm(
            as_completed(futures), total=n_folds, desc="crossval folds", disable=not progress
        ):
            done[futures[future]] = future.result()
    return [done[i] for i in range(n_folds)]


def summarise(
    folds: list[dict[str, Any]],
    log: Log,
    tasks: Sequence[TaskSpec],
    k: int,
    n_resamples: int = N_RESAMPLES,
    progress: bool = True,
) -> dict[str, Any]:
    """Per predictor (model, baseline, anchor), every figure over the folds' own users with its
    bootstrap interval; the model's per-fold figures, their mean and spread; the profile heads'
    reliability bins."""

    def user_of(part: Scored) -> np.ndarray:
        return log.user[part.events.index]

    profile_tasks = [t for t in tasks if t.level == "user" and t.kind == "multiclass"]
    parts = [(who, part) for who, by_part in folds[0]["scored"].items() for part in by_part]
    figures: dict[str, dict[str, Interval]] = {}
    for who, part in tqdm(parts, desc="bootstrap", disable=not progress):
        part_tasks = profile_tasks if who == ANCHOR else _items(tasks) if part == "cold" else tasks
        strata = [f["scored"][who][part] for f in folds]
        metrics = functools.partial(_metrics, log, part_tasks, k)
        prefix = cold.PREFIX if part == "cold" else ""
        found = intervals(strata, user_of, metrics, n_resamples)
        figures.setdefault(who, {}).update({prefix + m: v for m, v in found.items()})
    calibration = {
        who: calibration_curves(
            log, [f["scored"][who]["test"].profile for f in folds], profile_tasks
        )
        for who in (MODEL, ANCHOR)
    }
    per_fold = [f["metrics"] for f in folds]
    spread = {
        m: (
            float(np.mean([p[m] for p in per_fold])),
            float(np.std([p[m] for p in per_fold], ddof=1)),
        )
        for m in per_fold[0]
    }
    kept = ("fold", "n_holdout", "metrics", "seconds", "epochs", "best_epoch")
    return {
        "figures": {who: {m: v.to_dict() for m, v in f.items()} for who, f in figures.items()},
        "folds": [{key: f[key] for key in kept} for f in folds],
        "fold_mean_std": spread,
        "calibration": calibration,
        "n_users": sum(f["n_holdout"] for f in folds),
    }


def _metrics(log: Log, tasks: Sequence[TaskSpec], k: int, scored: ScoredSets) -> dict[str, float]:
    return scored_metrics(log, scored, tasks, k)


def _items(tasks: Sequence[TaskSpec]) -> list[TaskSpec]:
    return [t for t in tasks if t.level == "item"]


def calibration_curves(
    log: Log, profiles: Sequence[Scored | None], tasks: Sequence[TaskSpec]
) -> dict[str, Any]:
    """Per user task: the reliability bins of the folds' profile predictions together (count,
    mean confidence, accuracy per bin), what a reliability diagram draws."""
    out = {}
    for t in tasks:
        known = log.user_labels[t.name]
        totals = np.zeros((3, ECE_BINS))
        for profile in profiles:
            if profile is None:
                continue
            users = log.user[profile.events.index]
            use = known.mask[users]
            labels, probs = known.values[users][use], profile.outputs[t.name][use]
            totals += np.stack(reliability(labels, probs))
        count, confidence, correct = totals
        seen = count > 0
        out[t.name] = {
            "count": count[seen].astype(int).tolist(),
            "confidence": (confidence[seen] / count[seen]).tolist(),
            "accuracy": (correct[seen] / count[seen]).tolist(),
        }
    return out


def with_folds(cfg: Config, n_folds: int) -> Config:
    """`cfg` with fold 0 of `n_folds` as its holdout (the parent's view of the split)."""
    return dataclasses.replace(cfg, eval=dataclasses.replace(cfg.eval, n_folds=n_folds, fold=0))
