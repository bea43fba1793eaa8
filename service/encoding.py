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
        self.history_length = history_length

    def _lookup(self, ids: Sequence[str], missing: int) -> np.ndarray:
        return np.fromiter(
            (self.items.get(i, missing) for i in ids), dtype=np.int64, count=len(ids)
        )

    def encode(self, user_id: str, history: Sequence[str], candidates: Sequence[str]) -> Encoded:
        """Index arrays for one user (B = 1) and their N candidates."""
        user = self.users.get(user_id, UNK)
        window = np.full((1, self.history_length), PAD, dtype=np.int64)  # [1, L]
        indices = self._lookup(history, PAD)
        found = indices != PAD
        known = indices[found][-self.history_length :]  # unknown ids left out, not fed as UNK
        if len(known):
            window[0, -len(known) :] = known
        candidate = self._lookup(candidates, UNK)  # [N]
        unknown_candidates = [i for i, idx in zip(candidates, candidate, strict=True) if idx == UNK]
        return Encoded(
            inputs={
                "user_id": np.array([user], dtype=np.int64),
                "history": window,
                "candidate": candidate,
                "candidate_row": np.zeros(len(candidates), dtype=np.int64),
            },
            unknown_user=user == UNK,
            unknown_history=list(
                dict.fromkeys(i for i, ok in zip(history, found.tolist(), strict=True) if not ok)
            ),
            unknown_candidates=unknown_candidates,
            counts={
                "user": (1, int(user == UNK)),
                "history": (len(history), len(history) - int(found.sum())),
                "candidate": (len(candidates), len(unknown_candidates)),
            },
        )
