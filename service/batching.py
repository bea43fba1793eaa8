"""Dynamic batching: concurrent requests of one worker share one `session.run`.

The graph takes ragged batches (DESIGN.md): B users, each with their own candidates, joined by
`candidate_row`, so requests are concatenated without padding and each user is encoded once.
Scheduling is leader/follower, with no thread of its own: a request that finds the engine idle
runs at once, alone (an idle server adds no delay); requests that arrive while a batch runs
queue up, and when that batch ends the oldest of them leads the next batch, which takes the
queue up to HYDRAREC_BATCH_MAX_CANDIDATES. A leader may wait up to HYDRAREC_BATCH_MAX_DELAY_MS
for more requests when its batch is not full (0, the default, never waits).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

Inputs = dict[str, np.ndarray]
Outputs = dict[str, np.ndarray]


@dataclass
class _Job:
    inputs: Inputs
    n_candidates: int
    wake: threading.Event = field(default_factory=threading.Event)
    lead: bool = False
    outputs: Outputs | None = None
    error: BaseException | None = None


class Batcher:
    """Coalesces concurrent `run` calls into ragged batches for one engine."""

    def __init__(
        self,
        run: Callable[[Inputs], Outputs],
        user_tasks: set[str],
        max_candidates: int,
        max_delay_s: float,
        observe: Callable[[int], None] | None = None,
    ) -> None:
        """Args:
        run: the engine's session run (graph inputs -> outputs by name).
        user_tasks: outputs with one row per user ([B, K]); the others have one per candidate.
        max_candidates: a batch takes queued requests while their candidates fit (a single
            larger request still runs, alone).
        max_delay_s: how long a leader may wait for its batch to fill.
        observe: called with the number of requests of every batch run.
        """
        self._run = run
        self._user_tasks = user_tasks
        self._max_candidates = max_candidates
        self._max_delay_s = max_delay_s
        self._observe = observe
        self._lock = threading.Lock()
        self._arrived = threading.Condition(self._lock)
        self._queue: list[_Job] = []
        self._busy = False

    def run(self, inputs: Inputs) -> Outputs:
        """The outputs for one request (B = 1), computed alone or within a batch."""
        job = _Job(inputs, len(inputs["candidate"]))
        with self._lock:
            self._queue.append(job)
            self._arrived.notify()
            lead = not self._busy
            self._busy = True
        if lead:
            self._lead(promoted=False)
        while job.outputs is None and job.error is None:
            job.wake.wait()
            job.wake.clear()
            if job.lead:
                job.lead = False
                self._lead(promoted=True)
        if job.error is not None:
            raise job.error
        assert job.outputs is not None
        return job.outputs

    def _take(self, wait: bool) -> list[_Job]:
        """The next batch from the queue (lock held): the oldest request, then more while their
        candidates fit; with `wait`, up to max_delay for the batch to fill."""
        deadline = time.monotonic() + (self._max_delay_s if wait else 0.0)
        while True:
            batch: list[_Job] = []
            total = 0
            for job in self._queue:
                if batch and total + job.n_candidates > self._max_candidates:
                    break
                batch.append(job)
                total += job.n_candidates
            full = len(batch) < len(self._queue) or total >= self._max_candidates
            left = deadline - time.monotonic()
            if full or left <= 0:
                del self._queue[: len(batch)]
                return batch
            self._arrived.wait(left)

    def _lead(self, promoted: bool) -> None:
        """Run the next batch; then hand the lead to the oldest queued request, if any.
        Only a promoted leader (one that queued behind a batch) waits for its batch to fill."""
        with self._lock:
            batch = self._take(wait=promoted)
        try:
            outputs = self._run(_concatenate([job.inputs for job in batch]))
            for job, part in zip(batch, self._split(outputs, batch), strict=True):
                job.outputs = part
        except BaseException as e:  # every request of the batch gets the error
            for job in batch:
                job.error = e
        if self._observe is not None:
            self._observe(len(batch))
        with self._lock:
            if self._queue:
                self._queue[0].lead = True
                self._queue[0].wake.set()
            else:
                self._busy = False
        for job in batch:
            job.wake.set()

    def _split(self, outputs: Outputs, batch: list[_Job]) -> list[Outputs]:
        ends = np.cumsum([job.n_candidates for job in batch])
        starts = ends - [job.n_candidates for job in batch]
        return [
            {
                name: values[row : row + 1] if name in self._user_tasks else values[start:end]
                for name, values in outputs.items()
            }
            for row, (start, end) in enumerate(zip(starts, ends, strict=True))
        ]


def _concatenate(parts: list[Inputs]) -> Inputs:
    """One ragged batch: users stacked, candidates joined, `candidate_row` renumbered."""
    if len(parts) == 1:
        return parts[0]
    return {
        "user_id": np.concatenate([p["user_id"] for p in parts]),
        "history": np.concatenate([p["history"] for p in parts]),
        "candidate": np.concatenate([p["candidate"] for p in parts]),
        "candidate_row": np.concatenate(
            [np.full(len(p["candidate"]), row, dtype=np.int64) for row, p in enumerate(parts)]
        ),
    }
