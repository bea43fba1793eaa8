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

from service.artifact import FIRST_ID, QUERY_OUTPUT, Artifact, TaskSpec
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


Queries = Callable[[dict[str, torch.Tensor]], np.ndarray]  # a batch's inputs -> query [B, d]


def retrieval_scorer(
    model: MultiTaskRecommender,
    log: Log,
    tasks: Sequence[TaskSpec],
    history_length: int,
    batch_size: int = 1024,
) -> Scorer:
    """Each event's query vector against every item vector, as the exported graph and the
    service compute them, from the model in torch."""
    model.eval()
    with torch.no_grad():
        table = model.item_tables()[0].numpy()  # [n_items, d]

    def queries(inputs: dict[str, torch.Tensor]) -> np.ndarray:
        with torch.no_grad():
            return model(**inputs, query=True)[QUERY_OUTPUT].numpy()

    return vector_scorer(queries, table, log, tasks, history_length, batch_size)


def graph_retrieval_scorer(
    artifact: Artifact, log: Log, tasks: Sequence[TaskSpec], batch_size: int = 1024
) -> Scorer | None:
    """The retrieval score of an exported artifact: its graph's query output against its item
    vectors file (the rows of `log`'s items, in vocabulary order: ids a catalogue added later
    come after them; padding and the unknown item score 0, and no protocol ranks them); None
    for an artifact without retrieval (schema 2)."""
    spec = artifact.manifest.retrieval
    if spec is None:
        return None
    import onnxruntime as ort

    session = ort.InferenceSession(
        str(artifact.path / "model.onnx"), providers=["CPUExecutionProvider"]
    )
    vectors = np.load(artifact.path / spec.item_vectors, allow_pickle=False)  # vocabulary order
    table = np.zeros((log.n_items, vectors.shape[1]), dtype=np.float32)  # PAD, unknown: 0
    table[FIRST_ID:] = vectors[: log.n_items - FIRST_ID]

    def queries(inputs: dict[str, torch.Tensor]) -> np.ndarray:
        return session.run([spec.query], {k: v.numpy() for k, v in inputs.items()})[0]

    length = artifact.manifest.history_length
    return vector_scorer(queries, table, log, tasks, length, batch_size)


def vector_scorer(
    queries: Queries,
    table: np.ndarray,
    log: Log,
    tasks: Sequence[TaskSpec],
    history_length: int,
    batch_size: int,
) -> Scorer:
    """Each event's query vector (`queries` on the batch of its history) against every row of
    `table` [n_items, d], in float64."""
    vectors = table.astype(np.float64)

    def score(events: np.ndarray) -> np.ndarray:
        own = Events(events, log.item[events][:, None])  # one candidate: rows stay in order
        found = [
            queries(batch.inputs)
            for batch in batches(log, own, tasks, history_length, batch_size, False)
        ]
        return np.concatenate(found).astype(np.float64) @ vectors.T

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
