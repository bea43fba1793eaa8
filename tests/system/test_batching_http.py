"""Dynamic batching through the real server: concurrent requests share session runs, each gets
its own answer, also across a hot reload, and a lone request never waits for company."""

from __future__ import annotations

import random
import shutil
import threading
import time
from pathlib import Path

import httpx2 as httpx
import pytest

from harness.processes import REPOSITORY, running_service
from service.repository import load_artifact
from tests.service.conftest import publish_copy

pytestmark = pytest.mark.system

SOURCE = load_artifact(REPOSITORY, "movielens")
ITEMS = SOURCE.read_vocab("item_id")
USERS = SOURCE.read_vocab("user_id")
N_CLIENTS = 8


def bodies() -> list[dict[str, object]]:
    rng = random.Random(7)
    return [
        {
            "user_id": rng.choice(USERS),
            "history": rng.sample(ITEMS, 20),
            "candidates": rng.sample(ITEMS, 100),
            "top_k": 20,
        }
        for _ in range(N_CLIENTS)
    ]


def ranked(answer: dict) -> list[tuple[str, float]]:
    return [(i["item_id"], i["score"]) for i in answer["items"]]


def scraped(url: str, series: str) -> float:
    """The value of one exact series (name and labels as the exposition writes them)."""
    for line in httpx.get(f"{url}/metrics", timeout=10).text.splitlines():
        if line.rsplit(" ", 1)[0] == series:
            return float(line.split()[-1])
    raise AssertionError(series)


def test_batched_answers_match_lone_ones_under_concurrency_and_a_reload(tmp_path: Path) -> None:
    repository = tmp_path / "models"
    shutil.copytree(SOURCE.path, repository / "movielens" / SOURCE.path.name)
    first = SOURCE.manifest.version
    settings = {
        "HYDRAREC_WORKERS": "1",
        "HYDRAREC_MODEL_DIR": str(repository),
        "HYDRAREC_MODEL_POLL_SECONDS": "0.2",
        "HYDRAREC_BATCH_MAX_CANDIDATES": "4000",
        "HYDRAREC_BATCH_MAX_DELAY_MS": "2",
    }
    with running_service(tmp_path, **settings) as service:
        # Given: each body's answer when it is alone (a batch of one)
        with httpx.Client(base_url=service.url, timeout=30) as client:
            alone = [ranked(client.post("/predict", json=b).json()) for b in bodies()]
        stop = threading.Event()
        answers: list[tuple[int, int, list[tuple[str, float]]]] = []
        failures: list[int] = []

        def hammer(k: int) -> None:
            body = bodies()[k]
            with httpx.Client(base_url=service.url, timeout=30) as client:
                while not stop.is_set():
                    response = client.post("/predict", json=body)
                    if response.status_code != 200:
                        failures.append(response.status_code)
                        continue
                    version = int(response.json()["model"]["version"])
                    answers.append((k, version, ranked(response.json())))

        threads = [threading.Thread(target=hammer, args=(k,)) for k in range(N_CLIENTS)]
        for t in threads:
            t.start()
        try:
            # When: a new version (the same weights) is published while they run
            time.sleep(1.0)
            publish_copy(repository, SOURCE.path, first + 1)
            deadline = time.monotonic() + 30
            while scraped(service.url, 'hydrarec_model_loads_total{result="success"}') < 2:
                assert time.monotonic() < deadline, "the new version was never loaded"
                time.sleep(0.1)
            time.sleep(1.0)
        finally:
            stop.set()
            for t in threads:
                t.join(timeout=30)
        batches = scraped(service.url, "hydrarec_batch_requests_count")
        batched = scraped(service.url, "hydrarec_batch_requests_sum")

    # Then: every answer is the one the body gets alone, from either version
    assert failures == []
    assert {version for _, version, _ in answers} == {first, first + 1}
    for k, _, got in answers:
        assert [i for i, _ in got] == [i for i, _ in alone[k]]
        assert [s for _, s in got] == pytest.approx([s for _, s in alone[k]], abs=1e-5)
    assert batched > batches, "no session run ever answered more than one request"


def test_a_lone_request_under_batching_does_not_wait_for_the_delay(tmp_path: Path) -> None:
    settings = {"HYDRAREC_BATCH_MAX_CANDIDATES": "4000", "HYDRAREC_BATCH_MAX_DELAY_MS": "1000"}
    with running_service(tmp_path, HYDRAREC_WORKERS="1", **settings) as service:
        with httpx.Client(base_url=service.url, timeout=30) as client:
            body = bodies()[0]
            client.post("/predict", json=body)  # the first request of a connection
            elapsed = []
            for _ in range(5):
                started = time.monotonic()
                assert client.post("/predict", json=body).status_code == 200
                elapsed.append(time.monotonic() - started)
    # an idle server runs a request at once: milliseconds, far from the 1 s delay
    assert max(elapsed) < 0.25, elapsed
