"""Per-task evaluation under DESIGN.md's protocol, with the model and its baselines scored alike.

A predictor maps a set of events to per-task outputs (item tasks [E, C], user tasks [E, K]); the
model and the baselines (popularity, item like rate, majority class) are both predictors, so one
function computes every metric for both and the report puts them side by side.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from service.artifact import TaskSpec
from training.config import EvalConfig
from training.data.samples import (
    Events,
    batches,
    sample_distinct_negatives,
    sample_negatives,
    with_negatives,
)
from training.data.split import TEST, TRAIN, VALID, Log, evaluation_users
from training.data.vocab import interaction_task
from training.distributed import Ranks, gather_rows
from training.evaluation.metrics import (
    accuracy,
    auc,
    expected_calibration_error,
    hit_rate_and_ndcg,
    log_loss,
    macro_f1,
    multiclass_log_loss,
)
from training.network.heads import to_output
from training.network.recommender import MultiTaskRecommender

Predictor = Callable[[Events], dict[str, np.ndarray]]
LIKE_RATE_PRIOR = 10.0  # pseudo-count shrinking an item's like rate to the global one


@dataclass(frozen=True)
class EvalSets:
    """Fixed evaluation events of one part, sampled once with the eval seed."""

    items: Events  # every event, real item + n_click_negatives negatives
    ranking: Events | None = None  # first test event per user + n_rank_negatives distinct items
    profile: Events | None = None  # holdout users, read from their training history


def eval_sets(log: Log, part: int, cfg: EvalConfig) -> EvalSets:
    """The evaluation sets of `part` (VALID: item events only; TEST: all three)."""
    rng = np.random.default_rng(cfg.seed + part)
    keep = evaluated_users(log, cfg)
    idx = log.events(part)
    idx = idx if keep is None else idx[keep[log.user[idx]]]
    items = with_negatives(log, idx, sample_negatives(log, idx, cfg.n_click_negatives, rng))
    if part != TEST:
        return EvalSets(items)
    first = log.first_events(TEST, users=None if keep is None else np.flatnonzero(keep))
    ranking = with_negatives(
        log, first, sample_distinct_negatives(log, first, cfg.n_rank_negatives, rng)
    )
    # A user's first validation event sees exactly their training interactions as history.
    holdout = log.holdout if keep is None else log.holdout & keep
    profile_idx = log.first_events(VALID, users=np.flatnonzero(holdout))
    return EvalSets(items, ranking, Events(profile_idx, log.item[profile_idx][:, None]))


def evaluated_users(log: Log, cfg: EvalConfig) -> np.ndarray | None:
    """[n_users] bool: the users `eval.max_users` evaluates, None for every user."""
    return None if cfg.max_users <= 0 else evaluation_users(log.n_users, cfg.max_users, cfg.seed)


def cold_view(sets: EvalSets, first: int) -> EvalSets:
    """The same events seen as new users: id unknown, history cut to their first `first`
    interactions. MovieLens-100K has no user with so few training interactions (20 ratings at
    least), so cold users are simulated on the real test events."""
    ranking, profile = sets.ranking, sets.profile
    return EvalSets(
        dataclasses.replace(sets.items, cold=first),
        None if ranking is None else dataclasses.replace(ranking, cold=first),
        None if profile is None else dataclasses.replace(profile, cold=first),
    )


def model_predictor(
    model: MultiTaskRecommender,
    log: Log,
    tasks: Sequence[TaskSpec],
    history_length: int,
    batch_size: int = 1024,
) -> Predictor:
    """Predictor running the model (eval mode, no grad) and mapping logits to outputs."""

    def run(inputs: dict[str, torch.Tensor]) -> list[np.ndarray]:
        model.eval()
        device = next(model.parameters()).device
        with torch.no_grad():
            logits = model(**{k: v.to(device) for k, v in inputs.items()})
        return [to_output(t, logits[t.name]).cpu().numpy() for t in tasks]

    return _batched_predictor(run, log, tasks, history_length, batch_size)


def gathered(predict: Predictor, ranks: Ranks) -> Predictor:
    """`predict` with the events shared out over the ranks (rank r: events r, r + world, ...)
    and every prediction gathered back in order, so metrics are computed once over all of them
    (never an average of per-rank AUCs). One rank: `predict` itself."""
    if not ranks.distributed:
        return predict

    def run(events: Events) -> dict[str, np.ndarray]:
        n = len(events.index)
        if n < ranks.world:  # too few to share: every rank predicts them all
            return predict(events)
        mine = predict(events.take(np.arange(n)[ranks.rank :: ranks.world]))
        return gather_rows(mine, n, ranks)

    return run


def graph_predictor(
    graph: Path, log: Log, tasks: Sequence[TaskSpec], history_length: int, batch_size: int = 1024
) -> Predictor:
    """Predictor running an exported ONNX graph in onnxruntime (its task outputs are already
    probabilities): the figures of the artifact itself, e.g. a quantised one."""
    import onnxruntime as ort

    session = ort.InferenceSession(str(graph), providers=["CPUExecutionProvider"])
    names = [t.name for t in tasks]

    def run(inputs: dict[str, torch.Tensor]) -> list[np.ndarray]:
        return list(session.run(names, {k: v.numpy() for k, v in inputs.items()}))

    return _batched_predictor(run, log, tasks, history_length, batch_size)


def _batched_predictor(
    run: Callable[[dict[str, torch.Tensor]], list[np.ndarray]],
    log: Log,
    tasks: Sequence[TaskSpec],
    history_length: int,
    batch_size: int,
) -> Predictor:
    """Events -> batches -> `run` (one output per task, in task order) -> outputs per task."""

    def predict(events: Events) -> dict[str, np.ndarray]:
        parts: dict[str, list[np.ndarray]] = {t.name: [] for t in tasks}
        for batch in batches(log, events, tasks, history_length, batch_size, False):
            for t, values in zip(tasks, run(batch.inputs), strict=True):
                parts[t.name].append(values)
        shape = events.candidates.shape
        return {
            t.name: np.concatenate(parts[t.name]).reshape(
                shape if t.level == "item" else (shape[0], -1)
            )
            for t in tasks
        }

    return predict


def baseline_predictor(log: Log, tasks: Sequence[TaskSpec]) -> Predictor:
    """Popularity for interaction tasks, an item's smoothed training rate for other binary item
    tasks, the training mean for regression, the majority class / class prior for user tasks."""
    train = log.part == TRAIN
    popularity = np.bincount(log.item[train], minlength=log.n_items).astype(np.float64)
    item_rate = {}
    for t in tasks:
        if t.level == "item" and t.column:
            rate, mean = smoothed_rate(log, t)
            item_rate[t.name] = rate if t.kind == "binary" else np.full(log.n_items, mean)
    prior = {t.name: _training_prior(log, t) for t in tasks if t.level == "user"}

    def predict(events: Events) -> dict[str, np.ndarray]:
        out = {}
        for t in tasks:
            if t.level == "item":
                table = item_rate[t.name] if t.column else popularity
                out[t.name] = table[events.candidates]
            else:
                out[t.name] = np.repeat(prior[t.name][None, :], len(events.index), axis=0)
        return out

    return predict


def smoothed_rate(log: Log, task: TaskSpec) -> tuple[np.ndarray, float]:
    """[n_items] each item's training label rate, shrunk to the global mean by LIKE_RATE_PRIOR
    pseudo-counts, and that mean (an item task with a column)."""
    known = log.item_labels[task.name]
    use = (log.part == TRAIN) & known.mask
    mean = float(known.values[use].mean()) if use.any() else 0.0
    total = np.bincount(log.item[use], weights=known.values[use], minlength=log.n_items)
    count = np.bincount(log.item[use], minlength=log.n_items)
    return (total + LIKE_RATE_PRIOR * mean) / (count + LIKE_RATE_PRIOR), mean


def _training_prior(log: Log, task: TaskSpec) -> np.ndarray:
    """Class frequencies over training (non-holdout) users: the majority-class baseline."""
    known = log.user_labels[task.name]
    users = known.mask & ~log.holdout
    if task.kind == "multilabel":
        return known.values[users].mean(axis=0)
    return np.bincount(known.values[users], minlength=len(task.classes)) / max(1, users.sum())


@dataclass(frozen=True)
class Scored:
    """A predictor's outputs on one set of events (item tasks [E, C], user tasks [E, K])."""

    events: Events
    outputs: dict[str, np.ndarray]

    def take(self, rows: np.ndarray) -> Scored:
        """The events at `rows` with their outputs."""
        return Scored(self.events.take(rows), {k: v[rows] for k, v in self.outputs.items()})


@dataclass(frozen=True)
class ScoredSets:
    """The outputs on each set of an EvalSets (a set it lacks, or an empty profile set: None)."""

    items: Scored | None = None
    ranking: Scored | None = None
    profile: Scored | None = None

    def parts(self) -> dict[str, Scored]:
        """The sets present, by name."""
        named = {"items": self.items, "ranking": self.ranking, "profile": self.profile}
        return {k: v for k, v in named.items() if v is not None}


def score(sets: EvalSets, predict: Predictor) -> ScoredSets:
    """Run the predictor on every set."""

    def on(events: Events | None) -> Scored | None:
        if events is None or not len(events.index):  # a profile set of no holdout user
            return None
        return Scored(events, predict(events))

    return ScoredSets(Scored(sets.items, predict(sets.items)), on(sets.ranking), on(sets.profile))


def task_metrics(
    log: Log, sets: EvalSets, tasks: Sequence[TaskSpec], predict: Predictor, k: int
) -> dict[str, float]:
    """Every protocol metric a predictor reaches on the sets given."""
    return scored_metrics(log, score(sets, predict), tasks, k)


def scored_metrics(
    log: Log, scored: ScoredSets, tasks: Sequence[TaskSpec], k: int
) -> dict[str, float]:
    """Every protocol metric of outputs already computed (a resample of them: the bootstrap)."""
    metrics: dict[str, float] = {}
    if scored.items is not None:
        for t in [t for t in tasks if t.level == "item"]:
            metrics |= _item_metrics(log, scored.items.events, t, scored.items.outputs[t.name])
    if scored.ranking is not None:
        hr, ndcg = hit_rate_and_ndcg(scored.ranking.outputs[interaction_task(tasks)], k)
        metrics |= {f"hr@{k}": hr, f"ndcg@{k}": ndcg}
    if scored.profile is not None:
        for t in [t for t in tasks if t.level == "user"]:
            metrics |= _user_metrics(log, scored.profile.events, t, scored.profile.outputs[t.name])
    return metrics


def _item_metrics(log: Log, events: Events, task: TaskSpec, scores: np.ndarray) -> dict[str, float]:
    if task.interaction:
        labels = np.zeros_like(scores)
        labels[:, 0] = 1.0
        return {f"{task.name}_auc": auc(labels.reshape(-1), scores.reshape(-1))}
    known = log.item_labels[task.name]
    use = known.mask[events.index]
    labels, real = known.values[events.index][use], scores[use, 0]
    if task.kind == "regression":
        return {f"{task.name}_rmse": float(np.sqrt(np.mean((labels - real) ** 2)))}
    return {f"{task.name}_auc": auc(labels, real), f"{task.name}_logloss": log_loss(labels, real)}


def _user_metrics(log: Log, events: Events, task: TaskSpec, probs: np.ndarray) -> dict[str, float]:
    known = log.user_labels[task.name]
    users = log.user[events.index]
    use = known.mask[users]
    labels, probs = known.values[users][use], probs[use]
    if task.kind == "multilabel":
        aucs = [auc(labels[:, j], probs[:, j]) for j in range(labels.shape[1])]
        return {f"{task.name}_auc": float(np.nanmean(aucs))}
    predicted = probs.argmax(axis=1)
    out = {
        f"{task.name}_accuracy": accuracy(labels, predicted),
        f"{task.name}_logloss": multiclass_log_loss(labels, probs),
        f"{task.name}_ece": expected_calibration_error(labels, probs),
    }
    if len(task.classes) == 2:
        out[f"{task.name}_auc"] = auc(labels == 1, probs[:, 1])
    else:
        out[f"{task.name}_macro_f1"] = macro_f1(labels, predicted, len(task.classes))
    return out
