"""The cold-item protocol (DESIGN.md "Evaluation protocol"): items nobody touched in training.

The cold items' interactions (part COLD of the log) are scored with each user's training and
validation history, as a returning user would be served when the items arrive:
- click AUC: each cold interaction against n_click_negatives cold items the user never touched;
- HR@k / NDCG@k: the user's first cold interaction among n_cold_rank_negatives (99) untouched
  cold items (users who touched too many cold items to leave that many are skipped);
- like AUC and log loss on the cold interactions with a rating.
Baselines on the same events: random (exact expectations) and content popularity, a ridge
regression of a warm item's log training interaction count (and, per binary item task with a
column, its like rate) on its non-text content: token indicators, numbers with their missing flag
and, as popularity is far from linear in a number (MovieLens: year), one indicator per decile.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from service.artifact import TOKEN_KINDS, TaskSpec
from training.config import EvalConfig
from training.data.content import ContentInput
from training.data.samples import Events, sample_negatives, untouched, with_negatives
from training.data.split import COLD, TEST, TRAIN, Log
from training.evaluation.evaluate import EvalSets, Predictor, evaluated_users, smoothed_rate

PREFIX = "cold_item_"
RIDGE_ALPHA = 1.0
N_BINS = 10  # a numeric feature's quantile bins in the baseline's design matrix


def cold_item_sets(log: Log, cfg: EvalConfig) -> EvalSets | None:
    """The cold-item events (None when there are no cold items or none is scorable)."""
    cold = log.cold_items
    idx = log.events(COLD)
    keep = evaluated_users(log, cfg)
    idx = idx if keep is None else idx[keep[log.user[idx]]]
    first_test = log.first_events(TEST)
    history_of = dict(zip(log.user[first_test].tolist(), first_test.tolist(), strict=True))
    idx = idx[np.isin(log.user[idx], list(history_of))]  # users with a warm test point
    if not cold.any() or not len(idx):
        return None
    rng = np.random.default_rng(cfg.seed + COLD)
    pool = np.flatnonzero(cold)
    at = np.array([history_of[u] for u in log.user[idx].tolist()], dtype=np.int64)
    items = with_negatives(
        log, idx, sample_negatives(log, idx, cfg.n_click_negatives, rng, among=pool)
    )
    firsts, negatives = [], []
    for event in idx[np.unique(log.user[idx], return_index=True)[1]]:
        free = untouched(log, int(log.user[event]), pool)
        if len(free) >= cfg.n_cold_rank_negatives:
            firsts.append(event)
            negatives.append(rng.choice(free, size=cfg.n_cold_rank_negatives, replace=False))
    ranking = None
    if firsts:
        first = np.array(firsts, dtype=np.int64)
        ranked = with_negatives(log, first, np.stack(negatives))
        ranking = Events(
            first, ranked.candidates, history_at=np.array([history_of[u] for u in log.user[first]])
        )
    return EvalSets(Events(idx, items.candidates, history_at=at), ranking)


def random_figures(cfg: EvalConfig, tasks: Sequence[TaskSpec]) -> dict[str, float]:
    """What a random scorer gets in expectation: AUC 0.5, HR@k = k / C, NDCG@k likewise."""
    n = cfg.n_cold_rank_negatives + 1
    ndcg = float(sum(1.0 / np.log2(r + 2.0) for r in range(cfg.k)) / n)
    out = {f"{PREFIX}hr@{cfg.k}": cfg.k / n, f"{PREFIX}ndcg@{cfg.k}": ndcg}
    for t in tasks:
        if t.level == "item" and t.kind == "binary":
            out[f"{PREFIX}{t.name}_auc"] = 0.5
    return out


def design_matrix(
    n_items: int, arrays: dict[str, np.ndarray], inputs: Sequence[ContentInput]
) -> np.ndarray:
    """[n_items, P] non-text content per item index: an intercept, token indicators, numeric
    values, flags and decile indicators (text is left to the model: the baseline is popularity
    explained by genres and year)."""
    columns = [np.ones((n_items, 1))]
    for f in inputs:
        x = arrays[f.column]
        if f.kind in TOKEN_KINDS:
            tokens = x.reshape(len(x), -1)
            hot = np.zeros((len(x), f.n_tokens))
            np.put_along_axis(hot, tokens, 1.0, axis=1)
            columns.append(hot[:, 2:])  # PAD and UNK carry nothing
        elif f.kind == "numeric":
            columns += [x, _deciles(x[:, 0], x[:, 1] == 0)]
    return np.concatenate(columns, axis=1)


def _deciles(values: np.ndarray, known: np.ndarray) -> np.ndarray:
    """[n, N_BINS] indicator of each known value's quantile bin (all zero when missing)."""
    if not known.any():
        return np.zeros((len(values), N_BINS))
    edges = np.quantile(values[known], np.linspace(0, 1, N_BINS + 1)[1:-1])
    hot = np.eye(N_BINS)[np.searchsorted(edges, values)]
    return hot * known[:, None]


def _ridge(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Coefficients of ridge regression (the intercept column penalised like the rest)."""
    return np.linalg.solve(x.T @ x + RIDGE_ALPHA * np.eye(x.shape[1]), x.T @ y)


def content_baseline(
    log: Log,
    tasks: Sequence[TaskSpec],
    arrays: dict[str, np.ndarray],
    inputs: Sequence[ContentInput],
) -> Predictor:
    """Interaction task: predicted log training count from content; binary item tasks with a
    column: predicted smoothed training rate; user tasks are not cold-item figures."""
    x = design_matrix(log.n_items, arrays, inputs)
    train = log.part == TRAIN
    fitted = np.flatnonzero(np.bincount(log.item[train], minlength=log.n_items) > 0)
    count = np.log1p(np.bincount(log.item[train], minlength=log.n_items).astype(np.float64))
    tables = {}
    for t in tasks:
        if t.level != "item":
            continue
        if t.kind != "binary":
            tables[t.name] = np.zeros(log.n_items)  # no content baseline for regression
            continue
        target = count if t.interaction else smoothed_rate(log, t)[0]
        tables[t.name] = x @ _ridge(x[fitted], target[fitted])

    def predict(events: Events) -> dict[str, np.ndarray]:
        return {name: table[events.candidates] for name, table in tables.items()}

    return predict
