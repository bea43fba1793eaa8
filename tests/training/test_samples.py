"""Negatives, labels and masks of the batches the network trains on."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from service.artifact import PAD, UNK
from tests.conftest import tiny_config
from training.data.samples import make_batch, sample_negatives, with_negatives
from training.data.split import TRAIN
from training.evaluation.evaluate import cold_view
from training.pipeline.prepare import prepare


@pytest.fixture(scope="module")
def data():
    return prepare(tiny_config(), "synthetic")


def test_negatives_were_never_interacted_with(data) -> None:
    log = data.log
    idx = log.events(TRAIN)
    negatives = sample_negatives(log, idx, 5, np.random.default_rng(0))
    users = np.repeat(log.user[idx][:, None], 5, axis=1)
    assert not log.interacted(users, negatives).any()
    assert log.interacted(log.user[idx], log.item[idx]).all()


def test_ranking_negatives_are_distinct_and_unseen(data) -> None:
    ranking = data.test.ranking
    negatives = ranking.candidates[:, 1:]
    assert negatives.shape[1] == 50
    assert all(len(set(row)) == len(row) for row in negatives)
    users = np.repeat(data.log.user[ranking.index][:, None], negatives.shape[1], axis=1)
    assert not data.log.interacted(users, negatives).any()


def test_batch_labels_and_masks(data) -> None:
    log, tasks = data.log, data.tasks
    idx = log.events(TRAIN)[:64]
    events = with_negatives(log, idx, sample_negatives(log, idx, 3, np.random.default_rng(1)))
    batch = make_batch(log, events, tasks, 10, hide_holdout=True)

    assert batch.inputs["history"].shape == (64, 10)
    assert batch.inputs["candidate"].shape == (256,)
    assert batch.inputs["candidate_row"].tolist() == np.repeat(np.arange(64), 4).tolist()
    click = batch.labels["click"].reshape(64, 4)
    assert click[:, 0].eq(1).all()
    assert click[:, 1:].eq(0).all()
    like_mask = batch.masks["like"].reshape(64, 4)
    assert not like_mask[:, 1:].any(), "negatives have no like label"
    assert like_mask[:, 0].all(), "every synthetic interaction has a rating"


def test_holdout_users_have_no_profile_labels_in_training(data) -> None:
    log, tasks = data.log, data.tasks
    idx = log.events(TRAIN)
    holdout_rows = log.holdout[log.user[idx]]
    assert holdout_rows.any()
    assert not holdout_rows.all()
    events = with_negatives(log, idx, sample_negatives(log, idx, 1, np.random.default_rng(2)))

    hidden = make_batch(log, events, tasks, 10, hide_holdout=True)
    shown = make_batch(log, events, tasks, 10, hide_holdout=False)

    for task in ("gender", "age", "occupation"):
        assert not hidden.masks[task][holdout_rows].any()
        assert shown.masks[task][holdout_rows].any()


def test_empty_profile_cells_are_masked(data) -> None:
    users = data.tables.users
    empty = data.vocabs["user_id"].encode(users.loc[users["gender"] == "", "user_id"])
    assert len(empty) > 0
    assert not data.log.user_labels["gender"].mask[empty].any()


def test_pick_per_user_marks_n_events_of_each_user() -> None:
    from training.data.samples import pick_per_user

    users = np.array([3, 3, 3, 1, 1, 5, 3, 1, 1, 1])
    picked = pick_per_user(users, 2, np.random.default_rng(0))
    assert [int(picked[users == u].sum()) for u in (1, 3, 5)] == [2, 2, 1]
    other = pick_per_user(users, 2, np.random.default_rng(1))
    assert not np.array_equal(picked, other), "a different draw each epoch"


def test_only_picked_events_carry_profile_labels(data) -> None:
    from training.data.samples import pick_per_user

    log, tasks = data.log, data.tasks
    idx = log.events(TRAIN)
    picked = pick_per_user(log.user[idx], 1, np.random.default_rng(3))
    events = with_negatives(
        log, idx, sample_negatives(log, idx, 1, np.random.default_rng(4)), picked
    )
    batch = make_batch(log, events, tasks, 10, hide_holdout=True)
    assert not batch.masks["gender"][~picked].any()
    assert batch.masks["gender"][picked].any()
    assert batch.masks["click"].all(), "item tasks keep every event"


def test_profile_events_have_the_fullest_history_the_user_allows(data) -> None:
    from training.data.samples import pick_profile_events

    log = data.log
    idx = log.events(TRAIN)
    length = 5
    picked = pick_profile_events(log, idx, 2, length, np.random.default_rng(0))
    users = log.user[idx]
    for user in np.unique(users):
        mine = users == user
        count = int(mine.sum())
        assert picked[mine].sum() == min(2, count)
        positions = log.position[idx][mine & picked]
        assert (positions >= min(length, count - 2)).all(), "a short window was picked"


def test_cold_view_sees_an_unknown_user_with_their_first_items_only(data) -> None:
    """Cold-user evaluation: id UNK, history = the user's first k interactions (left-padded),
    whatever the event's position; candidates and labels unchanged."""
    log = data.log
    test = data.test.items
    cold = cold_view(data.test, 5).items
    normal = make_batch(log, test, data.tasks, 10, hide_holdout=False)
    seen = make_batch(log, cold, data.tasks, 10, hide_holdout=False)

    assert seen.inputs["user_id"].eq(UNK).all()
    starts = test.index - log.position[test.index]
    expected = np.stack([log.item[s : s + 5] for s in starts])
    assert seen.inputs["history"][:, :5].eq(PAD).all()
    assert np.array_equal(seen.inputs["history"][:, 5:].numpy(), expected)
    assert normal.inputs["history"][:, :5].ne(PAD).any(), "the normal view reads more"
    assert torch.equal(seen.inputs["candidate"], normal.inputs["candidate"])
    assert all(torch.equal(seen.labels[k], normal.labels[k]) for k in normal.labels)
