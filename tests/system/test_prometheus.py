"""The monitoring configuration, run for real: the Debian `prometheus` binary scrapes the
service (two workers) with docker/prometheus.yml and loads docker/alerts.yml."""

from __future__ import annotations

import json
import re
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx2 as httpx
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from harness.processes import DOCKER, Service, binary, free_port, running_service

pytestmark = pytest.mark.system

DASHBOARD = DOCKER / "grafana" / "dashboards" / "hydrarec.json"
N_GOOD, N_INVALID, N_TOO_LARGE = 30, 4, 2
N_RULES = len(yaml.safe_load((DOCKER / "alerts.yml").read_text())["groups"][0]["rules"])
WAIT_S = 60.0


DISCOVERY = "    dns_sd_configs:\n      - names: [service]\n        type: A\n        port: 8000\n"


def scrape_config(ports: list[int]) -> str:
    """docker/prometheus.yml with its DNS discovery of the compose replicas replaced by the
    services on `ports`, scraping every second."""
    text = (DOCKER / "prometheus.yml").read_text()
    targets = json.dumps([f"127.0.0.1:{p}" for p in ports])
    for old, new in (
        (DISCOVERY, f"    static_configs:\n      - targets: {targets}\n"),
        ("scrape_interval: 15s", "scrape_interval: 1s"),
        ("evaluation_interval: 15s", "evaluation_interval: 1s"),
        ("- alerts.yml", f"- {DOCKER / 'alerts.yml'}"),
    ):
        assert text.count(old) == 1, f"docker/prometheus.yml no longer has {old!r}"
        text = text.replace(old, new)
    return text


def query(prometheus: str, expr: str) -> float | None:
    """The first value of an instant query (None: no series)."""
    answer = httpx.get(f"{prometheus}/api/v1/query", params={"query": expr}, timeout=5)
    result = answer.json()["data"]["result"]
    return float(result[0]["value"][1]) if result else None


@contextmanager
def running_prometheus(folder: Path, ports: list[int]) -> Iterator[str]:
    """The Debian prometheus scraping the services on `ports`; its base URL."""
    config = folder / "prometheus.yml"
    config.write_text(scrape_config(ports))
    port = free_port()
    with (folder / "prometheus.log").open("wb") as log:
        prometheus = subprocess.Popen(
            [
                binary("prometheus"),
                f"--config.file={config}",
                f"--storage.tsdb.path={folder / 'data'}",
                f"--web.listen-address=127.0.0.1:{port}",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        _wait(lambda: httpx.get(f"{url}/-/ready", timeout=1).status_code == 200)
        yield url
    finally:
        prometheus.terminate()
        prometheus.wait(timeout=30)


@dataclass
class Stack:
    service: Service
    prometheus: str  # base URL

    def query(self, expr: str) -> float | None:
        return query(self.prometheus, expr)


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    folder = tmp_path_factory.mktemp("stack")
    with running_service(
        folder, HYDRAREC_WORKERS="2", PROMETHEUS_MULTIPROC_DIR=str(folder / "metrics")
    ) as service:
        with running_prometheus(folder, [int(service.url.rsplit(":", 1)[1])]) as url:
            yield Stack(service, url)


def _wait(condition: object) -> None:
    deadline = time.monotonic() + WAIT_S
    while time.monotonic() < deadline:
        try:
            if condition():  # type: ignore[operator]
                return
        except httpx.TransportError:
            pass
        time.sleep(0.25)
    raise AssertionError(f"condition not met within {WAIT_S} s")


def test_prometheus_counts_what_was_sent_across_both_workers(stack: Stack) -> None:
    # Given: a known mix of good and bad requests, each on a new connection
    url = stack.service.url
    body = {"user_id": "196", "history": ["242"], "candidates": ["1", "50"]}
    for _ in range(N_GOOD):
        assert httpx.post(f"{url}/predict", json=body, timeout=10).status_code == 200
    for _ in range(N_INVALID):
        bad = {"user_id": "196", "candidates": []}
        assert httpx.post(f"{url}/predict", json=bad, timeout=10).status_code == 422
    for _ in range(N_TOO_LARGE):
        huge = {"user_id": "196", "candidates": ["1"] * 400_000}
        assert httpx.post(f"{url}/predict", json=huge, timeout=10).status_code == 413

    # When: Prometheus has scraped after the last one
    ok = 'sum(hydrarec_http_requests_total{job="hydrarec", handler="/predict", status="2xx"})'
    _wait(lambda: stack.query(ok) == N_GOOD)

    # Then
    assert stack.query('up{job="hydrarec"}') == 1
    refused = 'sum(hydrarec_http_requests_total{handler="/predict", status="4xx"})'
    assert stack.query(refused) == N_INVALID + N_TOO_LARGE
    failures = 'sum(hydrarec_predict_failures_total{{reason="{}"}})'
    assert stack.query(failures.format("invalid_input")) == N_INVALID
    assert stack.query(failures.format("too_large")) == N_TOO_LARGE
    assert stack.query("sum(hydrarec_predict_candidates_sum)") == 2 * N_GOOD
    assert stack.query("sum(hydrarec_model_loads_total{result='success'})") == 2


def test_alert_rules_are_loaded_and_evaluate(stack: Stack) -> None:
    def rules() -> list[dict[str, Any]]:
        groups = httpx.get(f"{stack.prometheus}/api/v1/rules", timeout=5).json()["data"]["groups"]
        return [r for g in groups for r in g["rules"]]

    _wait(lambda: len(rules()) == N_RULES and all("lastEvaluation" in r for r in rules()))
    _wait(lambda: all(r["lastEvaluation"][:4] != "0001" for r in rules()))
    assert {r["health"] for r in rules()} == {"ok"}, [r.get("lastError") for r in rules()]
    firing = [r["name"] for r in rules() if r["state"] == "firing"]
    assert "HydrarecDown" not in firing
    assert "HydrarecNotReady" not in firing


def exposed_names(service: Service) -> set[str]:
    text = httpx.get(f"{service.url}/metrics", timeout=10).text
    return {s.name for f in text_string_to_metric_families(text) for s in f.samples}


def test_every_metric_in_the_dashboard_and_the_alerts_is_exposed(stack: Stack) -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    queries = [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]
    queries.append(dashboard["templating"]["list"][0]["query"]["query"])
    queries.append((DOCKER / "alerts.yml").read_text())
    used = {name for q in queries for name in re.findall(r"\bhydrarec_[a-z0-9_]+", q)}
    assert len(used) >= 10
    assert used <= exposed_names(stack.service), used - exposed_names(stack.service)


def test_promtool_finds_nothing_to_report_in_the_metrics(stack: Stack) -> None:
    text = httpx.get(f"{stack.service.url}/metrics", timeout=10).text
    result = subprocess.run(
        [binary("promtool"), "check", "metrics"], input=text, capture_output=True, text=True
    )
    assert result.returncode == 0
    assert result.stdout + result.stderr == ""
