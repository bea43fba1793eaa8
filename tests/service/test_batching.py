"""Dynamic batching: concurrent requests share a session.run and get exactly their own answers."""

from __future__ import annotations

import asyncio
import threading
import time

import numpy as np
import pytest
from fastapi.testclient import TestClient

from service.artifact import Artifact
from service.batching import Batcher, Inputs, Outputs
from service.encoding import RequestEncoder
from service.engine import InferenceEngine
from service.main import create_app
from tests.service.conftest import settings_for

N_REQUESTS = 24


@pytest.fixture(scope="module")
def engine(artifact: Artifact) -> InferenceEngine:
    return InferenceEngine(artifact, threads=1)


def requests(artifact: Artifact, n: int = N_REQUESTS) -> list[Inputs]:
    """Requests of different users, histories and candidate counts (ragged)."""
    users, items = artifact.read_vocab("user_id"), artifact.read_vocab("item_id")
    encoder = RequestEncoder(users, items, artifact.manifest.history_length)
    rng = np.random.default_rng(7)
    out = []
    for i in range(n):
        picked = [items[j] for j in rng.choice(len(items), 60, replace=False)]
        history = picked[: int(rng.integers(0, 40))]
        candidates = picked[40 : 40 + 1 + i % 20]
        out.append(encoder.encode(users[i], history, candidates).inputs)
    return out


class SlowRun:
    """The engine's run, held up a little so that concurrent requests queue behind it."""

    def __init__(self, engine: InferenceEngine, delay_s: float = 0.02) -> None:
        self.engine, self.delay_s = engine, delay_s
        self.batches: list[int] = []  # users per session.run

    def __call__(self, inputs: Inputs) -> Outputs:
        self.batches.append(len(inputs["user_id"]))
        time.sleep(self.delay_s)
        return self.engine.run(inputs)


def user_tasks(artifact: Artifact) -> set[str]:
    return artifact.manifest.per_user_outputs


def run_all(
    batcher: Batcher, inputs: list[Inputs], every_s: float = 0.0
) -> list[Outputs | BaseException]:
    """The requests on one event loop, as a worker's concurrent requests, arriving `every_s`
    apart (0: all at once)."""

    async def one(i: int, request: Inputs) -> Outputs:
        await asyncio.sleep(i * every_s)
        return await batcher.run(request)

    async def main() -> list[Outputs | BaseException]:
        tasks = (one(i, request) for i, request in enumerate(inputs))
        return await asyncio.gather(*tasks, return_exceptions=True)

    return asyncio.run(main())


def test_concurrent_requests_are_batched_and_get_their_own_answers(
    artifact: Artifact, engine: InferenceEngine
) -> None:
    slow = SlowRun(engine)
    observed: list[int] = []
    batcher = Batcher(slow, user_tasks(artifact), 2000, 0.0, observed.append)
    inputs = requests(artifact)
    batched = run_all(batcher, inputs, every_s=0.002)  # each run takes 20 ms
    assert slow.batches[0] == 1, "the first request ran at once, alone"
    assert max(slow.batches) > 1, "no two requests ever shared a session.run"
    assert observed == slow.batches
    assert sum(slow.batches) == N_REQUESTS
    for one, answer in zip(inputs, batched, strict=True):
        assert isinstance(answer, dict)
        alone = engine.run(one)
        assert answer.keys() == alone.keys()
        for name, values in alone.items():
            assert answer[name].shape == values.shape
            # float32 kernels may sum in another order for another batch size: equal to 1e-6
            np.testing.assert_allclose(answer[name], values, rtol=0, atol=1e-6)


def test_batches_respect_the_candidate_limit(artifact: Artifact, engine: InferenceEngine) -> None:
    sizes: list[int] = []

    def run(inputs: Inputs) -> Outputs:
        sizes.append(len(inputs["candidate"]))
        time.sleep(0.01)
        return engine.run(inputs)

    run_all(Batcher(run, user_tasks(artifact), 25, 0.0), requests(artifact))
    assert max(sizes) <= 25
    assert sum(sizes) == sum(1 + i % 20 for i in range(N_REQUESTS))


def test_a_batch_behind_another_waits_to_fill(artifact: Artifact, engine: InferenceEngine) -> None:
    """With a delay, the batch formed behind the first waits for requests that come later."""
    slow = SlowRun(engine, delay_s=0.05)
    batcher = Batcher(slow, user_tasks(artifact), 2000, max_delay_s=0.5)
    inputs = requests(artifact, 6)

    async def main() -> None:
        # two at once: a batch of several, so the next one may wait to fill
        first = [asyncio.ensure_future(batcher.run(one)) for one in inputs[:2]]
        await asyncio.sleep(0.01)  # the first batch is running
        early = asyncio.ensure_future(batcher.run(inputs[2]))
        await asyncio.sleep(0.15)  # after the first batch ended, within the delay
        late = [asyncio.ensure_future(batcher.run(one)) for one in inputs[3:]]
        await asyncio.gather(*first, early, *late)

    asyncio.run(main())
    assert slow.batches == [2, 4]


def test_a_lone_request_never_waits_for_company(
    artifact: Artifact, engine: InferenceEngine
) -> None:
    batcher = Batcher(engine.run, user_tasks(artifact), 2000, max_delay_s=5.0)
    started = time.monotonic()
    (answer,) = run_all(batcher, requests(artifact, 1))
    assert isinstance(answer, dict)
    # one session run takes milliseconds; waiting for company would take the whole 5 s
    assert time.monotonic() - started < 0.5, "an idle batcher waited for the batch to fill"


def test_batches_run_on_the_event_loop_with_the_requests_of_one_turn(
    artifact: Artifact, engine: InferenceEngine
) -> None:
    threads: list[tuple[int, str]] = []  # (users, thread) of every session.run

    def run(inputs: Inputs) -> Outputs:
        threads.append((len(inputs["user_id"]), threading.current_thread().name))
        return engine.run(inputs)

    batcher = Batcher(run, user_tasks(artifact), 2000, 0.0)
    inputs = requests(artifact, 3)
    run_all(batcher, inputs[:1])  # alone
    run_all(batcher, inputs)  # three in the same turn of the loop
    loop_thread = threading.current_thread().name  # asyncio.run's loop runs here
    assert threads == [(1, loop_thread), (3, loop_thread)]


def test_after_a_lone_request_nothing_waits_for_the_delay(
    artifact: Artifact, engine: InferenceEngine
) -> None:
    """The fill delay follows batches of several requests only: sequential requests (one
    client) never wait for it."""
    batcher = Batcher(engine.run, user_tasks(artifact), 2000, max_delay_s=5.0)
    inputs = requests(artifact, 3)

    async def one_after_another() -> float:
        started = time.monotonic()
        for one in inputs:
            await batcher.run(one)
        return time.monotonic() - started

    assert asyncio.run(one_after_another()) < 0.5  # waiting once would take 5 s


def test_a_failing_batch_fails_each_of_its_requests(artifact: Artifact) -> None:
    def broken(_: Inputs) -> Outputs:
        time.sleep(0.05)
        raise RuntimeError("session failed")

    batcher = Batcher(broken, user_tasks(artifact), 2000, 0.0)
    answers = run_all(batcher, requests(artifact, 4))
    assert all(isinstance(a, RuntimeError) and "session failed" in str(a) for a in answers)


def test_a_cancelled_request_does_not_break_its_batch(
    artifact: Artifact, engine: InferenceEngine
) -> None:
    batcher = Batcher(SlowRun(engine), user_tasks(artifact), 2000, 0.0)
    inputs = requests(artifact, 3)

    async def main() -> list[Outputs]:
        first = asyncio.ensure_future(batcher.run(inputs[0]))
        await asyncio.sleep(0.005)
        gone, kept = (asyncio.ensure_future(batcher.run(one)) for one in inputs[1:])
        await asyncio.sleep(0)
        gone.cancel()  # its client went away while it queued
        # the leader (gone) left before running the batch: a hand-over still answers kept
        return [await first, await asyncio.wait_for(kept, 10)]

    first, kept = asyncio.run(main())
    np.testing.assert_allclose(kept["click"], engine.run(inputs[2])["click"], atol=1e-6)


def test_the_api_answers_the_same_with_batching_on_and_off() -> None:
    body = {"user_id": "196", "history": ["242", "302"], "candidates": ["1", "50", "181", "x"]}
    with TestClient(create_app(settings_for())) as batched:  # batching is the default
        on = batched.post("/predict", json=body).json()
        metrics = batched.get("/metrics").text
    with TestClient(create_app(settings_for(batch_max_candidates=0))) as unbatched:
        off = unbatched.post("/predict", json=body).json()
        assert "hydrarec_batch_requests_count 0.0" in unbatched.get("/metrics").text
    assert on["unknown"] == off["unknown"]
    assert [i["item_id"] for i in on["items"]] == [i["item_id"] for i in off["items"]]
    for a, b in zip(on["items"], off["items"], strict=True):
        assert a["score"] == pytest.approx(b["score"], abs=1e-6)
    assert "hydrarec_batch_requests_count 1.0" in metrics
