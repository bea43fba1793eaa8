"""Request encoding: raw ids -> the graph's index arrays, through the artifact's vocabularies.

Unknown ids are reported. An unknown candidate or user maps to the unknown index
(service.artifact.UNK), whose representation training learned; an unknown history id is dropped
(PAD), so it changes nothing against leaving it out. The history keeps its last L items,
left-padded with PAD exactly as training built its windows.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from service.artifact import FIRST_ID, PAD, UNK


@dataclass(frozen=True)
class Encoded:
    """Graph inputs for one request and the ids that were not in the vocabularies."""

    inputs: dict[str, np.ndarray]  # user_id [1], history [1, L], candidate [N], candidate_row [N]
    unknown_user: bool
    unknown_history: list[str]  # distinct, in the order they occur
    unknown_candidates: list[str]
    counts: dict[str, tuple[int, int]]  # kind -> (ids looked up, of them unknown)


class RequestEncoder:
    """Vocabulary lookups built once, when the artifact is loaded."""

    def __init__(self, users: Sequence[str], items: Sequence[str], history_length: int) -> None:
        self.users = {uid: FIRST_ID + i for i, uid in enumerate(users)}
        self.items = {iid: FIRST_ID + i for i, iid in enumerate(items)}
        self.item_ids = list(items)  # index FIRST_ID + i -> id
        self.history_length = history_length

    def known_items(self, *ids: Sequence[str]) -> set[int]:
        """The item indices of those of `ids` that are in the catalogue."""
        get = self.items.get
        return {index for group in ids for i in group if (index := get(i)) is not None}

    def encode(self, user_id: str, history: Sequence[str], candidates: Sequence[str]) -> Encoded:
        """Index arrays for one user (B = 1) and their N candidates. Plain lists until the end,
        and the unknown ids searched for only when the counts say there are some: a request of
        known ids costs two list lookups and two arrays."""
        get = self.items.get
        user = self.users.get(user_id, UNK)
        found = [get(i, PAD) for i in history]
        candidate = [get(i, UNK) for i in candidates]
        unknown_history: list[str] = []
        if n_unknown_history := found.count(PAD):  # unknown ids left out, not fed as UNK
            unknown_history = list(
                dict.fromkeys(i for i, idx in zip(history, found, strict=True) if idx == PAD)
            )
            found = [idx for idx in found if idx != PAD]
        known = found[-self.history_length :]
        window = np.full((1, self.history_length), PAD, dtype=np.int64)  # [1, L]
        if known:
            window[0, -len(known) :] = known
        unknown_candidates: list[str] = []
        if n_unknown_candidates := candidate.count(UNK):
            unknown_candidates = [
                i for i, idx in zip(candidates, candidate, strict=True) if idx == UNK
            ]
        return Encoded(
            inputs={
                "user_id": np.array([user], dtype=np.int64),
                "history": window,
                "candidate": np.array(candidate, dtype=np.int64),  # [N]
                "candidate_row": np.zeros(len(candidate), dtype=np.int64),
            },
            unknown_user=user == UNK,
            unknown_history=unknown_history,
            unknown_candidates=unknown_candidates,
            counts={
                "user": (1, int(user == UNK)),
                "history": (len(history), n_unknown_history),
                "candidate": (len(candidates), n_unknown_candidates),
            },
        )
