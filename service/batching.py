"""Dynamic batching: concurrent requests of one worker share one `session.run`.

The graph takes ragged batches (DESIGN.md): B users, each with their own candidates, joined by
`candidate_row`, so requests are concatenated without padding and each user is encoded once.

All of it runs on the worker's event loop, `session.run` included. A worker has one core (ORT
threads = cores / workers), so an inference thread would only take turns with the loop, and its
hop per batch cost more than the overlap bought (docs/changelog.md: 1,801 against 2,048
requests/s at 8 connections). A request that finds no batch forming leads one: it gives the loop
one turn, so that the requests read with it queue behind it, then runs the batch itself with
every request queued by then, up to HYDRAREC_BATCH_MAX_CANDIDATES candidates. That turn and the
bookkeeping cost 13-38 µs of a request's CPU (docs/changelog.md), so a request alone in its
worker, which no other could join, does not come here: the server says so (service/protocol.py)
and /predict runs it at once (service/predict_endpoint.py). While a batch runs
the loop reads nothing, so requests that arrive meanwhile wait in the socket buffers, are read
together afterwards and form the next batch: under load batches form by themselves, without a
fixed delay. After a batch of several requests (the worker is under concurrent load) the next
batch may wait up to HYDRAREC_BATCH_MAX_DELAY_MS to fill (0, the default, never waits); after a
lone request nothing waits.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

Inputs = dict[str, np.ndarray]
Outputs = dict[str, np.ndarray]


@dataclass
class _Job:
    inputs: Inputs
    n_candidates: int
    answer: asyncio.Future[Outputs]


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
        max_delay_s: how long the batch after one of several requests may wait to fill.
        observe: called with the number of requests of every batch run.
        """
        self._run = run
        self._user_tasks = user_tasks
        self._max_candidates = max_candidates
        self._max_delay_s = max_delay_s
        self._observe = observe
        self._queue: list[_Job] = []
        self._arrived = asyncio.Event()
        self._draining = False  # a request (or, after its cancellation, a task) drains the queue
        self._handover: asyncio.Task[None] | None = None

    async def run(self, inputs: Inputs) -> Outputs:
        """The outputs for one request (B = 1), computed alone or within a batch.

        The request that finds no batch forming leads: it gives the loop one turn, so that the
        requests read with it queue too, then runs the batches itself. Those that queue
        meanwhile wait for the leader's answer (no task, no hop for a lone request)."""
        loop = asyncio.get_running_loop()
        job = _Job(inputs, len(inputs["candidate"]), loop.create_future())
        self._queue.append(job)
        self._arrived.set()
        if self._draining:  # a leader is draining the queue: it answers this one too
            return await job.answer
        try:
            await self._drain(turn=True)
        except asyncio.CancelledError:  # the leader's client left: the rest still get answers
            if self._queue:
                self._handover = loop.create_task(self._drain())
            raise
        return job.answer.result()

    async def _drain(self, turn: bool = False) -> None:
        """Run batches until the queue is empty (after one turn of the loop, with `turn`);
        after a batch of several requests, the next may wait to fill."""
        loop = asyncio.get_running_loop()
        self._draining = True
        try:
            if turn:
                await asyncio.sleep(0)
            while self._queue:
                batch = self._take()
                self._answer(batch)
                if len(batch) > 1 and self._max_delay_s > 0:
                    await self._fill(loop.time() + self._max_delay_s)
        finally:
            self._draining = False

    def _answer(self, batch: list[_Job]) -> None:
        """One session.run for the batch; every request gets its part, or the error."""
        try:
            outputs = self._run(_concatenate([job.inputs for job in batch]))
            for job, part in zip(batch, self._split(outputs, batch), strict=True):
                if not job.answer.done():  # a cancelled request (client gone)
                    job.answer.set_result(part)
        except Exception as e:  # every request of the batch gets the error
            for job in batch:
                if not job.answer.done():
                    job.answer.set_exception(e)
        if self._observe is not None:
            self._observe(len(batch))

    async def _fill(self, deadline: float) -> None:
        """Wait until the queue holds a full batch or the deadline passes."""
        loop = asyncio.get_running_loop()
        while sum(job.n_candidates for job in self._queue) < self._max_candidates:
            left = deadline - loop.time()
            if left <= 0:
                return
            self._arrived.clear()
            try:
                await asyncio.wait_for(self._arrived.wait(), left)
            except TimeoutError:
                return

    def _take(self) -> list[_Job]:
        """The oldest request, then more while their candidates fit."""
        batch: list[_Job] = []
        total = 0
        for job in self._queue:
            if batch and total + job.n_candidates > self._max_candidates:
                break
            batch.append(job)
            total += job.n_candidates
        del self._queue[: len(batch)]
        return batch

    def _split(self, outputs: Outputs, batch: list[_Job]) -> list[Outputs]:
        if len(batch) == 1:
            return [outputs]
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
