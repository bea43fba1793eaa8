"""Two replicas behind a real nginx (docker/nginx's template) and a real Prometheus, on 127.0.0.1:
traffic spreads, a killed replica costs no request and rejoins, a new version reaches both under
load, and nginx's own answers are fast JSON."""

from __future__ import annotations

import functools
import time
from contextlib import ExitStack
from pathlib import Path

import httpx2 as httpx
import pytest

from harness.nginx import running_nginx
from harness.processes import Service, free_port, total, wait_until
from harness.replicas import BODY, MAX_REQUESTS, kill, load, replica, served
from tests.service.conftest import publish_copy
from tests.system.test_prometheus import query, running_prometheus
from tests.system.test_workers import FIRST, SOURCE, repository_with_default

pytestmark = pytest.mark.system


def serves(service: Service, version: str) -> bool:
    """Whether a replica serves `version`."""
    models = httpx.get(f"{service.url}/v1/models", timeout=5).json()["models"]
    return str(models[0]["version"]) == version


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
