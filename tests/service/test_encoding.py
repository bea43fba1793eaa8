"""Ids -> index arrays: vocabulary positions, the unknown index, the last L of the history."""

from __future__ import annotations

import numpy as np

from service.artifact import FIRST_ID, PAD, UNK
from service.encoding import RequestEncoder


def encoder() -> RequestEncoder:
    return RequestEncoder(["u1", "u2"], ["a", "b", "c", "d"], history_length=3)


def test_known_ids_map_to_their_vocabulary_index() -> None:
    encoded = encoder().encode("u2", ["a", "b"], ["d", "a"])
    assert encoded.inputs["user_id"].tolist() == [FIRST_ID + 1]
    assert encoded.inputs["history"].tolist() == [[PAD, FIRST_ID, FIRST_ID + 1]]
    assert encoded.inputs["candidate"].tolist() == [FIRST_ID + 3, FIRST_ID]
    assert encoded.inputs["candidate_row"].tolist() == [0, 0]
    assert (encoded.unknown_user, encoded.unknown_history, encoded.unknown_candidates) == (
        False,
        [],
        [],
    )


def test_unknown_ids_are_listed_and_counted() -> None:
    encoded = encoder().encode("nobody", ["x", "a", "x"], ["y", "b"])
    assert encoded.inputs["user_id"].tolist() == [UNK]
    assert encoded.inputs["candidate"].tolist() == [UNK, FIRST_ID + 1]
    assert (encoded.unknown_user, encoded.unknown_history, encoded.unknown_candidates) == (
        True,
        ["x"],
        ["y"],
    )
    assert encoded.counts == {"user": (1, 1), "history": (3, 2), "candidate": (2, 1)}


def test_unknown_history_ids_are_left_out_not_fed_as_unknown() -> None:
    with_unknown = encoder().encode("u1", ["x", "a", "x", "b", "y"], ["a"])
    without = encoder().encode("u1", ["a", "b"], ["a"])
    assert with_unknown.inputs["history"].tolist() == [[PAD, FIRST_ID, FIRST_ID + 1]]
    assert with_unknown.inputs["history"].tolist() == without.inputs["history"].tolist()
    assert with_unknown.unknown_history == ["x", "y"]


def test_history_keeps_the_last_l_known_and_pads_on_the_left() -> None:
    full = encoder().encode("u1", ["a", "b", "c", "zzz", "d"], ["a"])
    assert full.inputs["history"].tolist() == [[FIRST_ID + 1, FIRST_ID + 2, FIRST_ID + 3]]
    assert full.unknown_history == ["zzz"]
    empty = encoder().encode("u1", [], ["a"])
    assert empty.inputs["history"].tolist() == [[PAD, PAD, PAD]]


def test_arrays_have_the_graph_dtypes() -> None:
    inputs = encoder().encode("u1", ["a"], ["a", "b", "c"]).inputs
    assert all(v.dtype == np.int64 for v in inputs.values())
    assert inputs["history"].shape == (1, 3)
