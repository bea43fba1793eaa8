"""Two replicas behind a real nginx (docker/nginx's template) and a real Prometheus, on 127.0.0.1:
traffic spreads, a killed replica costs no request and rejoins, a new version reaches both under
load, and nginx's own answers are fast JSON."""

from __future__ import annotations

import functools
import os
import signal
import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx2 as httpx
import pytest

from tests.service.conftest import publish_copy
from tests.system.nginx import running_nginx
from tests.system.processes import Service, free_port, running_service
from tests.system.test_prometheus import query, running_prometheus
from tests.system.test_workers import FIRST, SOURCE, repository_with_default, total, wait_until

pytestmark = pytest.mark.system

BODY = {"user_id": "196", "history": ["242", "302"], "candidates": ["1", "50", "181"]}
MAX_REQUESTS = 3000  # a bound on every load below


@dataclass
class Load:
    """Clients sending /predict through nginx until stopped (at most `limit` requests)."""

    url: str
    limit: int = MAX_REQUESTS
    statuses: list[int] = field(default_factory=list)
    versions: list[str] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)

    def run(self) -> None:
        with httpx.Client(timeout=10) as client:
            while not self.stop.is_set() and len(self.statuses) < self.limit:
                try:
                    answer = client.post(f"{self.url}/predict", json=BODY)
                except httpx.TransportError:
                    self.statuses.append(0)
                    continue
                self.statuses.append(answer.status_code)
                if answer.status_code == 200:
                    self.versions.append(answer.json()["model"]["version"])

    @property
    def failed(self) -> int:
        return sum(1 for s in self.statuses if s != 200)


@contextmanager
def load(url: str, clients: int = 3, limit: int = MAX_REQUESTS) -> Iterator[Load]:
    running = Load(url, limit)
    threads = [threading.Thread(target=running.run) for _ in range(clients)]
    for t in threads:
        t.start()
    try:
        yield running
    finally:
        running.stop.set()
        for t in threads:
            t.join(timeout=30)


def replica(stack: ExitStack, folder: Path, port: int, **settings: str) -> Service:
    """A replica on `port` (1 worker unless `settings` say otherwise), stopped with `stack`."""
    chosen = {"HYDRAREC_PORT": str(port), "HYDRAREC_WORKERS": "1"} | settings
    return stack.enter_context(running_service(folder, **chosen))


def served(service: Service) -> float:
    return total(service.url, "hydrarec_http_requests", handler="/predict")


def serves(service: Service, version: str) -> bool:
    """Whether a replica serves `version`."""
    models = httpx.get(f"{service.url}/v1/models", timeout=5).json()["models"]
    return str(models[0]["version"]) == version


def kill(service: Service) -> None:
    os.killpg(service.process.pid, signal.SIGKILL)
    service.process.wait()


def test_traffic_spreads_over_both_replicas_and_prometheus_scrapes_each(tmp_path: Path) -> None:
    ports = [free_port(), free_port()]
    with ExitStack() as stack:
        replicas = [replica(stack, tmp_path, p) for p in ports]
        url = stack.enter_context(running_nginx(tmp_path, ports))
        with httpx.Client(timeout=10) as client:
            statuses = [client.post(f"{url}/predict", json=BODY).status_code for _ in range(120)]
        assert statuses == [200] * 120
        counts = [served(r) for r in replicas]
        assert sum(counts) == 120
        assert min(counts) > 120 / 3, counts  # each answers more than a third
        prometheus = stack.enter_context(running_prometheus(tmp_path, ports))
        wait_until(
            lambda: query(prometheus, 'count(up{job="hydrarec"} == 1)') == 2,
            "Prometheus never saw both replicas up",
        )
        per_replica = query(prometheus, "count(count by (instance) (hydrarec_model_info))")
        assert per_replica == 2


def test_a_replica_killed_under_load_costs_no_request_and_rejoins(tmp_path: Path) -> None:
    ports = [free_port(), free_port()]
    with ExitStack() as stack:
        first = replica(stack, tmp_path, ports[0])
        replica(stack, tmp_path, ports[1])
        url = stack.enter_context(running_nginx(tmp_path, ports))
        with load(url) as running:
            wait_until(lambda: len(running.statuses) >= 50, "no load")
            kill(first)
            killed_at = len(running.statuses)
            wait_until(lambda: len(running.statuses) >= killed_at + 100, "no load after the kill")
            again = replica(stack, tmp_path, ports[0])
            ready = time.monotonic()
            wait_until(lambda: served(again) > 0, "the restarted replica never served", 30)
            rejoined_s = time.monotonic() - ready
        assert running.failed == 0, running.statuses
        assert len(running.statuses) < MAX_REQUESTS
        assert rejoined_s < 10  # nginx retries a failed server after fail_timeout (2 s)


def test_a_version_published_under_load_reaches_both_replicas(tmp_path: Path) -> None:
    repository = repository_with_default(tmp_path)
    settings = {"HYDRAREC_MODEL_DIR": str(repository), "HYDRAREC_MODEL_POLL_SECONDS": "0.2"}
    ports = [free_port(), free_port()]
    with ExitStack() as stack:
        replicas = [replica(stack, tmp_path, p, **settings) for p in ports]
        url = stack.enter_context(running_nginx(tmp_path, ports))
        with load(url) as running:
            wait_until(lambda: len(running.statuses) >= 30, "no load")
            publish_copy(repository, SOURCE, FIRST + 1)
            for r in replicas:
                wait_until(
                    functools.partial(serves, r, str(FIRST + 1)),
                    f"{r.url} never served the new version",
                )
            after = len(running.versions)
            wait_until(lambda: len(running.versions) >= after + 30, "no load after publishing")
        assert running.failed == 0, running.statuses
        assert set(running.versions) == {str(FIRST), str(FIRST + 1)}
        assert set(running.versions[after:]) == {str(FIRST + 1)}


def test_nginx_passes_the_services_errors_and_answers_its_own_in_json(tmp_path: Path) -> None:
    limit = 4096
    ports = [free_port(), free_port()]
    with ExitStack() as stack:
        replicas = [replica(stack, tmp_path, p, HYDRAREC_MAX_BODY_BYTES=str(limit)) for p in ports]
        url = stack.enter_context(running_nginx(tmp_path, ports, max_body_bytes=limit))
        bad = {"user_id": "196", "candidates": []}
        direct = httpx.post(f"{replicas[0].url}/predict", json=bad, timeout=10)
        proxied = httpx.post(f"{url}/predict", json=bad, timeout=10)
        assert proxied.status_code == direct.status_code == 422
        assert proxied.json() == direct.json()  # untouched
        before = sum(total(r.url, "hydrarec_http_requests") for r in replicas)
        large = httpx.post(
            f"{url}/predict",
            content=b"x" * (2 * limit),
            timeout=10,
            headers={"Content-Type": "application/json"},
        )
        assert large.status_code == 413
        body = large.json()
        assert body["error"] == "too_large"
        assert set(body) == {"error", "message", "fields"}  # the service's error shape
        after = sum(total(r.url, "hydrarec_http_requests") for r in replicas)
        assert after - before <= 2  # the two scrapes above; the 413 never reached a replica
        for r in replicas:
            kill(r)
        started = time.monotonic()
        down = httpx.post(f"{url}/predict", json=BODY, timeout=10)
        elapsed = time.monotonic() - started
        assert down.status_code == 502
        assert down.json()["error"] == "unavailable"
        assert down.headers["retry-after"] == "1"
        assert elapsed < 3.0  # refused connections: nginx answers at once, it does not hang
