"""Explanations (`"explain": true`): why each ranked item, and why each profile answer.

Faithful by construction: every figure is the model's own output. An item's `score` splits into
its tasks (weight x output, summing to the score). A history item's `change` is occlusion: the
output with the request's history, minus the output with that item left out of it (every
occurrence; older items move up into the model's window as a client sending that shorter
history would see), for each ranked item's item tasks and for each user task's top class. All
the left-out histories go through the graph in one run: one user row per tried item, each with
the ranked items as its candidates (the graph's ragged batch, `candidate_row`), so the cost is
that of one request of `tried` users and `tried x top_k` candidates.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from service.artifact import FIRST_ID, PAD, UNK, Manifest
from service.encoding import RequestEncoder
from service.engine import InferenceEngine
from service.errors import InvalidInput


@dataclass(frozen=True)
class ExplainLimits:
    """The settings that bound an explained request's work and answer."""

    tried: int  # history items left out, one graph row each (HYDRAREC_EXPLAIN_HISTORY)
    returned: int  # history items listed per task (HYDRAREC_EXPLAIN_TOP)
    max_items: int  # ranked items an explained request may return (HYDRAREC_EXPLAIN_MAX_ITEMS)


class Explainer:
    """Occlusion over one request's history, in one graph run."""

    def __init__(
        self,
        engine: InferenceEngine,
        encoder: RequestEncoder,
        limits: ExplainLimits,
    ) -> None:
        manifest: Manifest = engine.manifest
        self.engine = engine
        self.encoder = encoder
        self.limits = limits
        self.item_tasks = [t.name for t in manifest.tasks if t.level == "item"]
        self.user_tasks = {t.name: t.classes for t in manifest.tasks if t.level == "user"}
        users = next(i for i in manifest.inputs if i.name == "user_id")
        self.rows = users.shape[0]  # "B", or a fixed 1 in a graph that takes one user row
        self.model = f"model {manifest.name} version {manifest.version}"
        self.narrowest = manifest.history_min_length

    def check(self, n_items: int) -> None:
        """Refuse what this model or the limits cannot explain, before any work.

        Args:
            n_items: the ranked items the request will return.

        Raises:
            InvalidInput: the graph takes one user row, or `n_items` is over the limit.
        """
        if not isinstance(self.rows, str):
            raise InvalidInput.at(
                "explain",
                f"{self.model} cannot explain: its graph takes {self.rows} user row per run "
                "(user_id is fixed in an older export), and occlusion needs one row per "
                "history item; export it again with the current training code",
            )
        if n_items > self.limits.max_items:
            raise InvalidInput.at(
                "top_k",
                f"an explained request returns at most {self.limits.max_items} items "
                f"(HYDRAREC_EXPLAIN_MAX_ITEMS), this one would return {n_items}; ask for "
                "fewer with top_k, or leave out explain",
            )

    def explain(
        self,
        user_id: str,
        history: Sequence[str],
        weights: Mapping[str, float],
        answer: dict[str, Any],
    ) -> None:
        """Add `why` to each of the answer's ranked items and to its `user`.

        Args:
            user_id: the request's user.
            history: the request's history (as given, or read from the store).
            weights: the ranking weights the answer was scored with.
            answer: a /predict body (service.predictor.Predictor.body), changed in place.
        """
        length = self.encoder.history_length
        known = np.array(self._known(history), dtype=np.int64)
        recent = dict.fromkeys(reversed(known[-length:].tolist()))  # most recent first, distinct
        tried = np.array(list(recent)[: self.limits.tried], dtype=np.int64)
        items, user = answer["items"], answer["user"]
        user_index = self.encoder.users.get(user_id, UNK)
        outputs = self._left_out(user_index, known, tried, [i["item_id"] for i in items])
        names = [self.encoder.item_ids[t - FIRST_ID] for t in tried.tolist()]
        rows, k = len(tried), len(items)
        lists = {}
        for task in self.item_tasks:  # [items, rows]: with the history minus without the item
            with_item = np.array([item[task] for item in items], dtype=np.float64)
            without = outputs[task].reshape(rows, k).T if rows else np.empty((k, 0))
            lists[task] = self._largest(names, with_item[:, None] - without)
        for position, item in enumerate(items):
            item["why"] = {
                "score": {task: weight * item[task] for task, weight in weights.items()},
                "history": {task: lists[task][position] for task in self.item_tasks},
            }
        profile = {}
        for task, classes in self.user_tasks.items():
            probabilities = user[task]
            top = max(classes, key=probabilities.__getitem__)  # the first of equals
            left = outputs[task][:, classes.index(top)] if rows else np.empty(0)  # [rows]
            profile[task] = self._largest(names, probabilities[top] - left[None, :])[0]
        user["why"] = profile

    def _known(self, history: Sequence[str]) -> list[int]:
        """The history's item indices, unknown ids left out (as the encoder leaves them)."""
        get = self.encoder.items.get
        return [index for i in history if (index := get(i)) is not None]

    def _left_out(
        self, user: int, known: np.ndarray, tried: np.ndarray, ranked: list[str]
    ) -> dict[str, np.ndarray]:
        """One graph run: row r is the history without tried[r] (every occurrence; the last L
        of the rest right-aligned as the encoder aligns them, in a window no wider than they
        need where the graph allows: `width`); each row's candidates are the ranked items in
        order (item tasks come back row after row, [rows x items])."""
        if not len(tried):
            return {}
        keep = known[None, :] != tried[:, None]  # [rows, n]
        length = self.width(int(keep.sum(axis=1).max()))
        from_end = np.cumsum(keep[:, ::-1], axis=1)[:, ::-1] - 1  # kept items after this one
        row, column = np.nonzero(keep & (from_end < length))
        window = np.full((len(tried), length), PAD, dtype=np.int64)
        window[row, length - 1 - from_end[row, column]] = known[column]
        get = self.encoder.items.get
        candidates = np.array([get(i, UNK) for i in ranked], dtype=np.int64)
        return self.engine.run(
            {
                "user_id": np.full(len(tried), user, dtype=np.int64),
                "history": window,
                "candidate": np.tile(candidates, len(tried)),
                "candidate_row": np.repeat(np.arange(len(tried), dtype=np.int64), len(ranked)),
            }
        )

    def width(self, longest: int) -> int:
        """The window the graph is given for histories of at most `longest` known items: just
        wide enough where the graph takes narrower windows (the manifest's
        history_min_length; the same outputs, without reading padding), else L."""
        full = self.encoder.history_length
        if self.narrowest is None:
            return full
        return min(full, max(self.narrowest, longest))

    def _largest(self, names: list[str], change: np.ndarray) -> list[list[dict[str, Any]]]:
        """For each row of `change` [R, tried]: the `returned` history items of largest
        |change|, largest first (ties: the more recent first)."""
        order = np.argsort(-np.abs(change), axis=1, kind="stable")[:, : self.limits.returned]
        picked = np.take_along_axis(change, order, axis=1)
        return [
            [{"item_id": names[i], "change": c} for i, c in zip(o, v, strict=True)]
            for o, v in zip(order.tolist(), picked.tolist(), strict=True)
        ]
