"""The event store under real processes: a redis-server killed and started again under the
service's two workers' load, two replicas sharing one Redis behind nginx with one replica
killed, two workers sharing one SQLite file. Only the documented 503s, no worker lost, no
accepted event lost, every answer after an event reflects it."""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx2 as httpx
import pytest

from eventstore import open_store
from harness.nginx import running_nginx
from harness.processes import free_port, running_service, wait_until
from harness.redis_server import RedisServer, running_redis
from harness.replicas import kill, replica
from tests.system.test_workers import workers_of

pytestmark = pytest.mark.system
CANDIDATES = ["1", "50", "181", "100"]
CARRIED = {"user_id": "196", "history": ["242", "302"], "candidates": CANDIDATES}
STORED = {"user_id": "196", "candidates": CANDIDATES}
MAX_EACH = 2000  # requests per client at most: the load is bounded


@dataclass
class Client:
    """One client thread's requests and answers (status, error reason)."""

    send: Callable[[httpx.Client, int], httpx.Response]
    answers: list[tuple[int, str]] = field(default_factory=list)
    accepted: list[str] = field(default_factory=list)  # event ids answered 200

    def run(self, url: str, stop: threading.Event) -> None:
        with httpx.Client(base_url=url, timeout=10) as client:
            for n in range(MAX_EACH):
                if stop.is_set():
                    return
                answer = self.send(client, n)
                reason = "" if answer.status_code == 200 else answer.json()["error"]
                if answer.status_code == 503:
                    assert answer.headers["Retry-After"] == "1"
                self.answers.append((answer.status_code, reason))

    def statuses(self) -> set[tuple[int, str]]:
        return set(self.answers)


@contextmanager
def loading(url: str, clients: list[Client]) -> Iterator[None]:
    stop = threading.Event()
    threads = [threading.Thread(target=c.run, args=(url, stop)) for c in clients]
    for t in threads:
        t.start()
    try:
        yield
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=30)


def events_client(user: str) -> Client:
    def send(client: httpx.Client, n: int) -> httpx.Response:
        ids = [f"{user}-{n}-{k}" for k in range(10)]
        batch = [{"user_id": user, "item_id": str(1 + (n + k) % 1000), "event_id": i}
                 for k, i in enumerate(ids)]  # fmt: skip
        answer = client.post("/events", json={"events": batch})
        if answer.status_code == 200:
            events.accepted.extend(ids)
        return answer

    events = Client(send)
    return events


def predict_client(body: dict[str, Any]) -> Client:
    return Client(lambda client, _: client.post("/predict", json=body))


def stored_ids(url: str) -> set[str | None]:
    store = open_store(url)
    try:
        return {e.event_id for e in store.log()}
    finally:
        store.close()


def test_redis_killed_and_restarted_under_load(tmp_path: Path) -> None:
    with running_redis(tmp_path / "redis") as redis, running_service(
        tmp_path, HYDRAREC_WORKERS="2", HYDRAREC_STORE_URL=redis.url,
        PROMETHEUS_MULTIPROC_DIR=str(tmp_path / "metrics"),
    ) as service:  # fmt: skip
        workers = workers_of(service.process.pid)
        writers = [events_client("a"), events_client("b")]
        carried, stored = predict_client(CARRIED), predict_client(STORED)
        clients = [*writers, carried, stored]
        with loading(service.url, clients):
            wait_until(lambda: len(stored.answers) >= 30, "no load")
            redis.kill()  # SIGKILL: nothing flushed on the way out
            down_at = len(stored.answers)
            wait_until(lambda: len(stored.answers) >= down_at + 30, "no load while Redis is down")
            redis.start()  # the same port and data: appendonly, appendfsync always
            up_at = len(stored.answers)
            wait_until(
                lambda: stored.answers[-1][0] == 200 and len(stored.answers) >= up_at + 30,
                "the service never used Redis again",
            )
        after = workers_of(service.process.pid)
        metrics = httpx.get(f"{service.url}/metrics", timeout=10).text
        accepted = {i for w in writers for i in w.accepted}
        assert accepted <= stored_ids(redis.url)  # every 200 is in the store after a SIGKILL

    assert carried.statuses() == {(200, "")}  # a request carrying its history never needs it
    outage = {(503, "store_unavailable")}
    for client in (*writers, stored):
        assert client.statuses() == {(200, "")} | outage, client.statuses()
        assert client.answers[-1] == (200, ""), "back without a restart"
    assert after == workers  # no worker died or was replaced
    assert 'hydrarec_store_errors_total{backend="redis",operation="add"}' in metrics


def test_replicas_sharing_redis_lose_no_event_when_one_is_killed(tmp_path: Path) -> None:
    ports = [free_port(), free_port()]
    with ExitStack() as stack:
        redis: RedisServer = stack.enter_context(running_redis(tmp_path / "redis"))
        replicas = [replica(stack, tmp_path, p, HYDRAREC_STORE_URL=redis.url) for p in ports]
        url = stack.enter_context(running_nginx(tmp_path, ports))
        answers, accepted = [], []
        with httpx.Client(base_url=url, timeout=10) as client:
            for n in itertools.count():
                if n == 60:
                    kill(replicas[0])
                if n == 150:
                    break
                event = {"user_id": "walker", "item_id": f"fresh-{n}", "event_id": f"w{n}"}
                posted = client.post("/events", json={"events": [event]})
                answer = client.post("/predict", json={"user_id": "walker", "candidates": ["1"]})
                answers.append((posted.status_code, answer.status_code))
                if posted.status_code == 200:
                    accepted.append(event["event_id"])
                    assert f"fresh-{n}" in answer.json()["unknown"]["history"], (n, answer.json())
                time.sleep(0.01)
        assert answers == [(200, 200)] * 150  # nginx retried the killed replica's requests
        assert set(accepted) <= stored_ids(redis.url)


def test_an_event_is_visible_to_the_next_request_on_either_worker(tmp_path: Path) -> None:
    """A new connection per request: the two workers take them as they come, so an event
    stored by one is read by the other about half of the time."""
    store = f"sqlite:///{tmp_path}/state/events.db"
    with running_service(
        tmp_path, HYDRAREC_WORKERS="2", HYDRAREC_STORE_URL=store,
        PROMETHEUS_MULTIPROC_DIR=str(tmp_path / "metrics"),
    ) as service:  # fmt: skip
        for n in range(100):
            event = {"user_id": "walker", "item_id": f"fresh-{n}"}
            posted = httpx.post(f"{service.url}/events", json={"events": [event]}, timeout=10)
            assert posted.status_code == 200
            body = {"user_id": "walker", "candidates": ["1"]}
            answer = httpx.post(f"{service.url}/predict", json=body, timeout=10)
            assert f"fresh-{n}" in answer.json()["unknown"]["history"], n
