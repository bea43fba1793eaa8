"""The retrieval score and the two-stage path, as full-catalogue scorers.

A scorer maps a user's events [U] to a score for every item index [U, n_items]. The retrieval
score is the one the service's index searches by: the user's query vector (the interaction head's
W h_u) against every item's vector (its row of the item table), the dot part of the click logit.
The two-stage path is what recommend mode serves: the top R items by the retrieval score among
those the user has not touched before the event (the request's history), re-ranked by the full
model; every other item is out of the ranking.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch

from service.artifact import FIRST_ID, QUERY_OUTPUT, TaskSpec
from training.data.samples import Events, batches
from training.data.split import TRAIN, VALID, Log
from training.evaluation.bootstrap import UserRows
from training.network.recommender import MultiTaskRecommender

Scorer = Callable[[np.ndarray], np.ndarray]  # event indices [U] -> scores [U, n_items]
DEPTHS = (100, 300, 1000)  # R: items retrieved for the full model to re-rank


def last_batch(scorer: Scorer) -> Scorer:
    """`scorer`, keeping its answer for the last batch of events it was asked about."""
    memo: dict[bytes, np.ndarray] = {}

    def score(events: np.ndarray) -> np.ndarray:
        key = events.tobytes()
        if key not in memo:
            memo.clear()
            memo[key] = scorer(events)
        return memo[key]

    return score


def retrieval_scorer(
    model: MultiTaskRecommender,
    log: Log,
    tasks: Sequence[TaskSpec],
    history_length: int,
    batch_size: int = 1024,
) -> Scorer:
    """Each event's query vector against every item vector, as the exported graph and the
    service compute them."""
    model.eval()
    with torch.no_grad():
        table = model.item_tables()[0].numpy().astype(np.float64)  # [n_items, d]

    def score(events: np.ndarray) -> np.ndarray:
        own = Events(events, log.item[events][:, None])  # one candidate: rows stay in order
        queries = []
        with torch.no_grad():
            for batch in batches(log, own, tasks, history_length, batch_size, False):
                queries.append(model(**batch.inputs, query=True)[QUERY_OUTPUT].numpy())
        return np.concatenate(queries).astype(np.float64) @ table.T

    return score


def two_stage(log: Log, retrieve: Scorer, rank: Scorer, depth: int) -> Scorer:
    """`rank`'s scores of the `depth` items `retrieve` scores highest among those the user did
    not touch before the test period (train and validation: the history a request sends, which
    recommend mode drops); -inf for every other item."""
    rows = UserRows(log.user, log.n_users)
    before = np.isin(log.part, (TRAIN, VALID))

    def score(events: np.ndarray) -> np.ndarray:
        retrieved = np.array(retrieve(events), dtype=np.float64)
        retrieved[:, :FIRST_ID] = -np.inf
        for row, user in enumerate(log.user[events]):
            mine = rows.rows(np.array([user]))
            retrieved[row, log.item[mine[before[mine]]]] = -np.inf
        k = min(depth, retrieved.shape[1])
        top = np.argpartition(-retrieved, k - 1, axis=1)[:, :k]
        keep = np.take_along_axis(retrieved, top, axis=1) > -np.inf
        out = np.full(retrieved.shape, -np.inf)
        chosen = np.take_along_axis(np.asarray(rank(events), dtype=np.float64), top, axis=1)
        np.put_along_axis(out, top, np.where(keep, chosen, -np.inf), axis=1)
        return out

    return score
