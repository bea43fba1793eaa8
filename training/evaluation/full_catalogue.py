"""The full-catalogue protocol: each user's first test item ranked among every catalogue item the
user never interacted with, not among a sample (sampled metrics flatter models and can reorder
them: Krichene & Rendle, KDD 2020). HR@10, NDCG@10 and HR@50, each with a percentile bootstrap
interval over users, for the model, the popularity baseline and EASE (Steck, WWW 2019).

A scorer maps a user's events [U] to a score for every item index [U, n_items]. Padding, the
unknown item and every item the user touched in any part of the log (but the one ranked) are left
out of the ranking; ties count against the ranked item, as in the sampled protocol.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from service.artifact import FIRST_ID, TaskSpec
from training.data.samples import Events
from training.data.split import COLD, TEST, TRAIN, VALID, Log
from training.data.vocab import interaction_task
from training.evaluation.bootstrap import N_RESAMPLES, Interval, UserRows
from training.evaluation.evaluate import Predictor
from training.evaluation.retrieval import DEPTHS, Scorer, last_batch, two_stage

EASE_LAMBDAS = (10.0, 50.0, 100.0, 250.0, 500.0, 1000.0)  # picked on the validation events
EASE_MAX_CELLS = 50_000_000  # EASE here is dense: users x items and items x items float64s
USERS_PER_BATCH = 64
RETRIEVAL = "retrieval score alone"
EVERY_ITEM = "model, every item"


@dataclass(frozen=True)
class Ranked:
    """Where each user's first test item landed among the items the user never touched."""

    rank: np.ndarray  # [U] 0-based
    n_candidates: np.ndarray  # [U] the items it was ranked among, itself included

    def figures(self) -> dict[str, np.ndarray]:
        """Per user: hr@10, ndcg@10, hr@50 (1/0 and the discounted gain)."""
        return {
            "hr@10": (self.rank < 10).astype(np.float64),
            "ndcg@10": np.where(self.rank < 10, 1.0 / np.log2(self.rank + 2.0), 0.0),
            "hr@50": (self.rank < 50).astype(np.float64),
        }


def rank_events(log: Log, events: np.ndarray, scorer: Scorer) -> Ranked:
    """The rank of each event's item under `scorer` among the catalogue items its user never
    touched (every part of the log)."""
    return rank_all(log, events, {"scorer": scorer})["scorer"]


def rank_all(
    log: Log,
    events: np.ndarray,
    scorers: Mapping[str, Scorer],
    targets: np.ndarray | None = None,
) -> dict[str, Ranked]:
    """`rank_events` for several scorers, batch by batch of users: each batch is scored by every
    scorer in turn, so scorers that share work (the two-stage path reads the retrieval and
    model scores of the same batch) can keep it for the batch (`last_batch`). `targets`: the
    item ranked for each event, when not the event's own (a cold item, scored with the history
    of another event of its user)."""
    rows = UserRows(log.user, log.n_users)
    ranks: dict[str, list[np.ndarray]] = {name: [] for name in scorers}
    sizes = []
    for start in range(0, len(events), USERS_PER_BATCH):
        batch = events[start : start + USERS_PER_BATCH]
        allowed = np.ones((len(batch), log.n_items), dtype=bool)
        allowed[:, :FIRST_ID] = False  # padding and the unknown item
        for row, user in enumerate(log.user[batch]):
            allowed[row, log.item[rows.rows(np.array([user]))]] = False
        positive = log.item[batch] if targets is None else targets[start : start + len(batch)]
        allowed[np.arange(len(batch)), positive] = True
        sizes.append(allowed.sum(axis=1))
        for name, scorer in scorers.items():
            scores = np.asarray(scorer(batch), dtype=np.float64)
            target = scores[np.arange(len(batch)), positive][:, None]
            ranks[name].append(np.sum((scores >= target) & allowed, axis=1) - 1)
    n_candidates = np.concatenate(sizes) if sizes else np.zeros(0, dtype=np.int64)
    return {
        name: Ranked(np.concatenate(r) if r else np.zeros(0, dtype=np.int64), n_candidates)
        for name, r in ranks.items()
    }


def with_intervals(
    ranked: Ranked, n_resamples: int = N_RESAMPLES, seed: int = 0
) -> dict[str, Interval]:
    """Each figure's mean over users with its 95% percentile interval over resampled users."""
    return paired_intervals(ranked.figures(), n_resamples, seed)


def paired_intervals(
    per_user: Mapping[str, np.ndarray], n_resamples: int = N_RESAMPLES, seed: int = 0
) -> dict[str, Interval]:
    """Each per-user array's mean with its 95% percentile interval, every array resampled with
    the same draws of users (row i of each is user i's): the interval of a difference of two
    rows' figures given here is paired."""
    sizes = {len(values) for values in per_user.values()}
    if len(sizes) > 1:
        raise ValueError(f"per-user figures of different lengths: {sorted(sizes)}")
    n = sizes.pop() if sizes else 0
    draws = np.random.default_rng(seed).integers(0, n, (n_resamples, n))
    out = {}
    for name, values in per_user.items():
        means = values[draws].mean(axis=1)
        low, high = np.percentile(means, [2.5, 97.5])
        out[name] = Interval(float(values.mean()), float(low), float(high))
    return out


def popularity_scorer(log: Log) -> Scorer:
    """Every user scores an item by its training interactions."""
    train = log.part == TRAIN
    counts = np.bincount(log.item[train], minlength=log.n_items).astype(np.float64)
    return lambda events: np.repeat(counts[None, :], len(events), axis=0)


def ease_weights(gram: np.ndarray, lam: float) -> np.ndarray:
    """EASE's item-item matrix B [I, I] from the Gram matrix X'X of a binary user x item matrix:
    the ridge regression of each item's column on the others (B's diagonal held at 0), in
    closed form: P = (X'X + lam I)^-1, B = I - P diag(1 / diag(P))."""
    inverse = np.linalg.inv(gram + lam * np.eye(gram.shape[0]))
    weights = -inverse / np.diag(inverse)[None, :]
    np.fill_diagonal(weights, 0.0)
    return weights


def tuned_ease(log: Log) -> tuple[float, Scorer] | None:
    """EASE fitted on the training interactions, with the lambda of EASE_LAMBDAS whose NDCG@10 on
    each user's first validation item (history: the training items) is highest; its scorer
    feeds a user's training and validation items (what the model reads before a test event).
    None for a log past EASE_MAX_CELLS (its dense matrices would not fit: the figures then
    leave EASE out)."""
    if max(log.n_users, log.n_items) * log.n_items > EASE_MAX_CELLS:
        return None
    train = _matrix(log, (TRAIN,))
    gram = train.T @ train

    def scorer(weights: np.ndarray, history: np.ndarray) -> Scorer:
        return lambda events: history[log.user[events]] @ weights

    first = log.first_events(VALID)
    fitted = {lam: ease_weights(gram, lam) for lam in EASE_LAMBDAS}
    ndcg = {
        lam: float(rank_events(log, first, scorer(w, train)).figures()["ndcg@10"].mean())
        for lam, w in fitted.items()
    }
    best = max(ndcg, key=ndcg.__getitem__)
    return best, scorer(fitted[best], _matrix(log, (TRAIN, VALID)))


def model_scorer(predict: Predictor, log: Log, tasks: Sequence[TaskSpec]) -> Scorer:
    """The model's interaction-task (click) probability of every item, as the protocol ranks."""
    click = interaction_task(tasks)
    every = np.arange(log.n_items)

    def score(events: np.ndarray) -> np.ndarray:
        candidates = np.repeat(every[None, :], len(events), axis=0)
        return predict(Events(events, candidates))[click]

    return score


@dataclass(frozen=True)
class Figures:
    """Full-catalogue figures by scorer name, over `users` users."""

    by_scorer: dict[str, dict[str, Interval]]
    users: int


def catalogue_scorers(
    log: Log, tasks: Sequence[TaskSpec], predict: Predictor, retrieve: Scorer | None = None
) -> dict[str, Scorer]:
    """The full-catalogue scorers by name ("EASE, lambda 250"): popularity, tuned EASE, and the
    model: with `retrieve` (its retrieval score), that score alone and the two-stage path at
    each of DEPTHS, beside the full model scoring every item (the two-stage path's ceiling)."""
    model = last_batch(model_scorer(predict, log, tasks))
    scorers: dict[str, Scorer] = {"popularity": popularity_scorer(log)}
    ease = tuned_ease(log)
    if ease is not None:
        scorers[f"EASE, lambda {ease[0]:g}"] = ease[1]
    if retrieve is not None:
        retrieve = last_batch(retrieve)
        scorers[RETRIEVAL] = retrieve
        for depth in DEPTHS:
            scorers[two_stage_name(depth)] = two_stage(log, retrieve, model, depth)
    scorers[EVERY_ITEM] = model
    return scorers


def two_stage_name(depth: int) -> str:
    """The two-stage path's row at retrieval depth `depth`."""
    return f"two-stage, R = {depth}"


def full_catalogue(
    log: Log,
    tasks: Sequence[TaskSpec],
    predict: Predictor,
    users: np.ndarray | None = None,
    n_resamples: int = N_RESAMPLES,
    retrieve: Scorer | None = None,
) -> tuple[Figures, Figures | None]:
    """The figures of `catalogue_scorers`: first on each user's first test item (of every user,
    or of `users`: eval.max_users' sample); then on cold items (None without any): where each
    user's first interaction with an item nobody touched in training lands, scored with the
    history of the user's first test event (training and validation), as the cold-item
    protocol scores it."""
    scorers = catalogue_scorers(log, tasks, predict, retrieve)

    def figures(events: np.ndarray, targets: np.ndarray | None = None) -> Figures:
        ranked = rank_all(log, events, scorers, targets)
        by_scorer = {name: with_intervals(r, n_resamples) for name, r in ranked.items()}
        return Figures(by_scorer, len(events))

    first = log.first_events(TEST, users)
    cold = log.first_events(COLD, users)
    at = dict(zip(log.user[first].tolist(), first.tolist(), strict=True))
    cold = cold[np.isin(log.user[cold], list(at))]  # users with a test event to score from
    if not len(cold):
        return figures(first), None
    history_of = np.array([at[u] for u in log.user[cold].tolist()], dtype=np.int64)
    return figures(first), figures(history_of, log.item[cold])


def _matrix(log: Log, parts: Sequence[int]) -> np.ndarray:
    """[n_users, n_items] 1 where the user interacted with the item in one of `parts`."""
    out = np.zeros((log.n_users, log.n_items), dtype=np.float64)
    keep = np.isin(log.part, parts)
    out[log.user[keep], log.item[keep]] = 1.0
    return out


def table(figures: Figures, what: str = "full catalogue") -> str:
    """The figures as a markdown table, one row per scorer."""
    names = ("hr@10", "ndcg@10", "hr@50")
    lines = [
        f"| {what}, {figures.users:,} users (95% interval) | " + " | ".join(names) + " |",
        "|---|" + "---:|" * len(names),
    ]
    for scorer, row in figures.by_scorer.items():
        cells = [f"{row[n].value:.3f} [{row[n].low:.3f}, {row[n].high:.3f}]" for n in names]
        lines.append(f"| {scorer} | " + " | ".join(cells) + " |")
    return "\n".join(lines)
