"""The chronological split, the profile holdout and history windows (no leakage)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from service.artifact import PAD
from tests.conftest import tiny_config
from training.data.split import TEST, TRAIN, VALID, build_log
from training.data.tables import Tables
from training.pipeline.prepare import prepare


@pytest.fixture(scope="module")
def data():
    return prepare(tiny_config(), "synthetic")


def _tables(counts: dict[str, int]) -> Tables:
    rows = [(u, f"i{k}", 100 - k) for u, n in counts.items() for k in range(n)]
    inter = pd.DataFrame(rows, columns=["user_id", "item_id", "timestamp"])
    users = pd.DataFrame({"user_id": list(counts)})
    items = pd.DataFrame({"item_id": [f"i{k}" for k in range(max(counts.values()))]})
    return Tables(inter, users, items)


def test_split_sizes_follow_the_protocol() -> None:
    from training.data.vocab import Vocab

    tables = _tables({"a": 20, "b": 5, "c": 2, "d": 35})
    users = Vocab.build(tables.users["user_id"])
    log = build_log(tables, users, Vocab.build(tables.items["item_id"]), [], 0.0, 0)

    sizes = {
        u: [
            int(np.sum((log.user == users.encode([u])[0]) & (log.part == p)))
            for p in (TRAIN, VALID, TEST)
        ]
        for u in "abcd"
    }
    assert sizes == {"a": [16, 2, 2], "b": [3, 1, 1], "c": [2, 0, 0], "d": [29, 3, 3]}


def test_split_is_chronological_per_user(data) -> None:
    log = data.log
    for user in np.unique(log.user)[:50]:
        parts = log.part[log.user == user]
        assert np.all(np.diff(parts) >= 0), "train, then validation, then test"


def test_chronological_order_breaks_ties_by_item_id() -> None:
    from training.data.vocab import Vocab

    inter = pd.DataFrame({"user_id": ["a"] * 3, "item_id": ["z", "b", "m"], "timestamp": [5, 5, 1]})
    tables = Tables(
        inter, pd.DataFrame({"user_id": ["a"]}), pd.DataFrame({"item_id": ["b", "m", "z"]})
    )
    items = Vocab.build(tables.items["item_id"])
    log = build_log(tables, Vocab.build(["a"]), items, [], 0.0, 0)
    assert list(log.item) == list(items.encode(["m", "b", "z"]))


def test_split_and_holdout_are_deterministic(data) -> None:
    again = prepare(tiny_config(), "synthetic")
    assert np.array_equal(again.log.part, data.log.part)
    assert np.array_equal(again.log.holdout, data.log.holdout)
    assert np.array_equal(again.test.ranking.candidates, data.test.ranking.candidates)


def test_holdout_is_a_fifth_of_users(data) -> None:
    n_users = len(data.vocabs["user_id"].ids)
    assert data.log.holdout.sum() == round(0.2 * n_users)
    assert not data.log.holdout[:2].any(), "PAD and UNK rows are never users"


def test_history_holds_only_earlier_items_of_the_same_user(data) -> None:
    log, length = data.log, 10
    idx = np.arange(len(log.user))
    history = log.history(idx, length)  # [M, L]
    for row in range(0, len(idx), 37):
        start = row - log.position[row]
        earlier = log.item[start:row][-length:]
        real = history[row][history[row] != PAD]
        assert list(real) == list(earlier), "the last L items strictly before the event"
        assert np.all(history[row][: length - len(real)] == PAD), "left padding"


def test_first_event_has_an_empty_history(data) -> None:
    first = np.flatnonzero(data.log.position == 0)
    assert np.all(data.log.history(first, 10) == PAD)


def test_cold_items_lose_every_interaction_from_training_and_validation(data) -> None:
    from training.data.split import COLD

    log = data.log
    counts = np.bincount(log.item, minlength=log.n_items)
    eligible = counts >= 5
    assert log.cold_items.sum() == round(0.15 * eligible.sum())
    assert not (log.cold_items & ~eligible).any(), "only items with >= 5 interactions"
    is_cold = log.cold_items[log.item]
    assert (log.part[is_cold] == COLD).all()
    assert not (log.part[~is_cold] == COLD).any()
    warm = np.flatnonzero(log.part != COLD)
    windows = log.history(warm, 10)
    assert not log.cold_items[windows[windows != PAD]].any(), "no window shows a cold item"
    assert not log.trained()[0][log.cold_items].any(), "no cold item has a trained id"


def test_cold_item_events_are_scored_with_the_training_and_validation_history(data) -> None:
    from training.data.samples import make_batch

    sets = data.cold_items
    assert sets is not None
    assert sets.ranking is not None
    log = data.log
    assert log.cold_items[sets.items.candidates].all(), "cold items against cold items"
    assert not log.interacted(
        np.repeat(log.user[sets.items.index][:, None], 4, 1), sets.items.candidates[:, 1:]
    ).any(), "negatives the user never touched"
    assert sets.ranking.candidates.shape[1] == 1 + 10  # tiny_config: 10 cold negatives
    batch = make_batch(log, sets.items.take(np.arange(3)), data.tasks, 10, hide_holdout=False)
    expected = log.history(sets.items.history_at[:3], 10)
    np.testing.assert_array_equal(batch.inputs["history"].numpy(), expected)
    assert (log.part[sets.items.history_at] == TEST).all(), "the first test event's window"
