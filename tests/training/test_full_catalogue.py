"""The full-catalogue protocol: ranks among every untouched item, EASE's closed form, and the
scorers on a log with planted tastes."""

from __future__ import annotations

import numpy as np
import pytest

from service.artifact import FIRST_ID
from tests.conftest import learning_config, tiny_config
from training.data.split import TEST, TRAIN, VALID, Log
from training.evaluation.full_catalogue import (
    Ranked,
    ease_weights,
    paired_intervals,
    popularity_scorer,
    rank_events,
    tuned_ease,
    with_intervals,
)
from training.evaluation.retrieval import two_stage
from training.pipeline.prepare import prepare


@pytest.fixture(scope="module")
def tiny_log() -> Log:
    return prepare(tiny_config(), "synthetic").log


def brute_force_rank(log: Log, event: int, scores: np.ndarray) -> int:
    """The item's place among the catalogue items its user never touched, item by item."""
    user, item = log.user[event], log.item[event]
    touched = set(log.item[log.user == user].tolist()) - {item}
    others = [j for j in range(FIRST_ID, log.n_items) if j not in touched and j != item]
    return sum(1 for j in others if scores[j] >= scores[item])


def test_an_item_is_ranked_among_the_untouched_items_only_ties_against_it(tiny_log: Log) -> None:
    log = tiny_log
    first = log.first_events(TEST)
    rng = np.random.default_rng(0)
    table = rng.integers(0, 5, (log.n_users, log.n_items)).astype(float)  # many ties
    for user in range(log.n_users):  # the items a user touched score highest: never counted
        table[user, log.item[log.user == user]] = 100.0

    ranked = rank_events(log, first, lambda events: table[log.user[events]])

    expected = [brute_force_rank(log, e, table[log.user[e]]) for e in first]
    assert ranked.rank.tolist() == expected
    untouched = [
        log.n_items - FIRST_ID - len(set(log.item[log.user == log.user[e]].tolist())) + 1
        for e in first
    ]
    assert ranked.n_candidates.tolist() == untouched


def test_an_oracle_hits_every_user_and_a_constant_scorer_none(tiny_log: Log) -> None:
    log = tiny_log
    first = log.first_events(TEST)

    def oracle(events: np.ndarray) -> np.ndarray:
        scores = np.zeros((len(events), log.n_items))
        scores[np.arange(len(events)), log.item[events]] = 1.0
        return scores

    hit = with_intervals(rank_events(log, first, oracle), n_resamples=50)
    flat = rank_events(log, first, lambda events: np.zeros((len(events), log.n_items)))

    assert hit["hr@10"].value == hit["ndcg@10"].value == hit["hr@50"].value == 1.0
    assert (flat.rank == flat.n_candidates - 1).all()  # every tie counted against the item
    assert Ranked(flat.rank, flat.n_candidates).figures()["hr@10"].sum() == (flat.rank < 10).sum()


def test_ease_is_the_ridge_regression_of_each_item_on_the_others() -> None:
    rng = np.random.default_rng(1)
    x = (rng.random((40, 7)) < 0.3).astype(float)
    lam = 3.0

    weights = ease_weights(x.T @ x, lam)

    for j in range(x.shape[1]):
        others = [i for i in range(x.shape[1]) if i != j]
        a = x[:, others]
        solved = np.linalg.solve(a.T @ a + lam * np.eye(len(others)), a.T @ x[:, j])
        assert weights[others, j] == pytest.approx(solved, abs=1e-9)
        assert weights[j, j] == 0.0


def test_on_planted_tastes_ease_ranks_far_above_popularity() -> None:
    log = prepare(learning_config(), "synthetic").log
    first = log.first_events(TEST)

    tuned = tuned_ease(log)
    assert tuned is not None
    lam, ease = tuned
    figures = {
        name: with_intervals(rank_events(log, first, scorer), n_resamples=200)
        for name, scorer in (("ease", ease), ("popularity", popularity_scorer(log)))
    }

    assert figures["ease"]["hr@10"].low > figures["popularity"]["hr@10"].high
    assert figures["ease"]["ndcg@10"].value > 1.5 * figures["popularity"]["ndcg@10"].value


def test_two_stage_keeps_the_rankers_order_among_the_top_retrieved_only(tiny_log: Log) -> None:
    log = tiny_log
    events = log.first_events(TEST)[:8]
    rng = np.random.default_rng(2)
    retrieve = rng.normal(size=(len(events), log.n_items))
    rank = rng.normal(size=(len(events), log.n_items))

    scores = two_stage(log, lambda e: retrieve, lambda e: rank, depth=5)(events)

    for row, event in enumerate(events):
        user = log.user[event]
        before = log.item[(log.user == user) & np.isin(log.part, (TRAIN, VALID))]
        allowed = [j for j in range(FIRST_ID, log.n_items) if j not in set(before.tolist())]
        top = sorted(allowed, key=lambda j: -retrieve[row, j])[:5]
        kept = np.flatnonzero(np.isfinite(scores[row]))
        assert sorted(kept.tolist()) == sorted(top)
        assert scores[row, kept] == pytest.approx(rank[row, kept])


def test_on_planted_tastes_the_two_stage_path_ranks_far_above_popularity(trained) -> None:
    """The synthetic run's held-out model: the items its retrieval score puts in the top 20 of
    200, re-ranked, hold each user's next item about as often as the full model over every
    item, and far more often than popularity."""
    from training.evaluation.evaluate import model_predictor
    from training.evaluation.full_catalogue import model_scorer, rank_all
    from training.evaluation.retrieval import last_batch, retrieval_scorer
    from training.pipeline.checkpoint import from_checkpoint

    result, _ = trained
    model, _, cfg, prepared = from_checkpoint(result.report["json"].parent / "heldout.pt", None)
    log, tasks, length = prepared.log, prepared.tasks, cfg.network.history_length
    full = last_batch(model_scorer(model_predictor(model, log, tasks, length), log, tasks))
    retrieve = last_batch(retrieval_scorer(model, log, tasks, length))
    ranked = rank_all(
        log,
        log.first_events(TEST),
        {
            "two-stage": two_stage(log, retrieve, full, depth=20),
            "full": full,
            "popularity": popularity_scorer(log),
        },
    )
    figures = {name: with_intervals(r, n_resamples=200) for name, r in ranked.items()}

    assert figures["two-stage"]["hr@10"].low > figures["popularity"]["hr@10"].high
    assert figures["two-stage"]["ndcg@10"].value > 1.5 * figures["popularity"]["ndcg@10"].value
    assert figures["two-stage"]["hr@10"].value >= 0.9 * figures["full"]["hr@10"].value


def test_a_target_other_than_the_events_own_item_is_ranked_from_the_events_history(
    tiny_log: Log,
) -> None:
    """Cold items are ranked with another event's history: `targets` names the item."""
    from training.evaluation.full_catalogue import rank_all

    log = tiny_log
    events = log.first_events(TEST)
    targets = np.array([log.item[log.user == log.user[e]][0] for e in events])  # a touched item
    rng = np.random.default_rng(3)
    table = rng.random((len(events), log.n_items))

    def scorer(batch: np.ndarray) -> np.ndarray:
        return table[np.searchsorted(events, batch)]

    ranked = rank_all(log, events, {"random": scorer}, targets)["random"]

    for row, (event, target) in enumerate(zip(events, targets, strict=True)):
        touched = set(log.item[log.user == log.user[event]].tolist()) - {int(target)}
        others = [j for j in range(FIRST_ID, log.n_items) if j not in touched and j != target]
        assert ranked.rank[row] == sum(table[row, j] >= table[row, target] for j in others)


def test_paired_intervals_resample_every_row_with_the_same_users() -> None:
    rng = np.random.default_rng(0)
    a = rng.random(300)
    b = a + 0.01 * rng.standard_normal(300)  # close to a, user by user
    found = paired_intervals({"a": a, "b": b, "a - b": a - b}, n_resamples=300)
    difference = found["a - b"]
    assert difference.value == pytest.approx(found["a"].value - found["b"].value)
    # paired: far tighter than either row's own interval
    assert difference.high - difference.low < 0.1 * (found["a"].high - found["a"].low)
    with pytest.raises(ValueError, match="per-user figures of different lengths"):
        paired_intervals({"a": a, "b": b[:10]})


def test_the_graphs_retrieval_score_is_the_models(trained, tmp_path) -> None:
    """The exported artifact's query output and item vectors file score every item as the
    model in torch does."""
    from service.repository import verify_folder
    from training.__main__ import main
    from training.evaluation.retrieval import graph_retrieval_scorer, retrieval_scorer
    from training.pipeline.checkpoint import from_checkpoint

    result, _ = trained
    checkpoint = result.report["json"].parent / "heldout.pt"
    assert main(["export", "--checkpoint", str(checkpoint), "--out", str(tmp_path)]) == 0
    artifact = verify_folder(tmp_path / "synth" / "1")
    model, _, cfg, prepared = from_checkpoint(checkpoint, None)
    log, tasks = prepared.log, prepared.tasks
    events = log.first_events(TEST)[:40]
    graph = graph_retrieval_scorer(artifact, log, tasks)
    assert graph is not None
    torch_scores = retrieval_scorer(model, log, tasks, cfg.network.history_length)(events)
    scores = graph(events)
    assert scores.shape == torch_scores.shape
    np.testing.assert_allclose(  # padding and the unknown item: 0, and never ranked
        scores[:, FIRST_ID:], torch_scores[:, FIRST_ID:], rtol=1e-4, atol=1e-4
    )
