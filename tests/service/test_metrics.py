"""/metrics: Prometheus text that parses, series at 0 from start-up, counts that follow traffic."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from service.artifact import Artifact
from service.main import create_app
from tests.service.conftest import settings_for


@pytest.fixture
def fresh() -> Iterator[TestClient]:
    """A new app per test: a fresh registry, nothing counted yet."""
    with TestClient(create_app(settings_for())) as c:
        yield c


def samples(client: TestClient) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    response = client.get("/metrics")
    assert response.headers["content-type"].startswith("text/plain")
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(response.text)
        for s in family.samples
    }


def value(found: dict, name: str, **labels: str) -> float:
    return found[(name, frozenset(labels.items()))]


def test_every_series_exists_at_zero_from_start_up(fresh: TestClient, artifact: Artifact) -> None:
    found = samples(fresh)
    model = {"model": "movielens", "version": str(artifact.manifest.version)}
    for reason in ("invalid_input", "too_large", "not_ready", "internal"):
        assert value(found, "hydrarec_predict_failures_total", reason=reason) == 0
    for kind in ("user", "history", "candidate"):
        assert value(found, "hydrarec_unknown_ids_total", kind=kind) == 0
    for stage in ("encode", "infer", "rank"):
        assert value(found, "hydrarec_predict_stage_duration_seconds_count", stage=stage) == 0
    assert value(found, "hydrarec_predict_candidates_count") == 0
    for status in ("2xx", "4xx", "5xx", "499"):
        labels = {"handler": "/predict", "method": "POST", "status": status}
        assert value(found, "hydrarec_http_requests_total", **labels, **model) == 0
    for task in ("click", "like", "gender"):
        assert value(found, "hydrarec_prediction_probability_count", task=task, **model) == 0
    assert value(found, "hydrarec_model_info", **model) == 1


def test_names_follow_prometheus_conventions(fresh: TestClient) -> None:
    families = list(text_string_to_metric_families(fresh.get("/metrics").text))
    assert families
    for family in families:
        assert family.name.startswith(("hydrarec_", "process_"))
        if family.type == "counter":
            assert all(s.name.endswith("_total") for s in family.samples)
        if family.type == "histogram" and "duration" in family.name:
            assert family.name.endswith("_seconds")
        assert not family.name.endswith(("_ms", "_us", "_milliseconds"))


def test_a_prediction_is_counted(fresh: TestClient, artifact: Artifact) -> None:
    body = {"user_id": "ghost", "history": ["1", "x"], "candidates": ["1", "50", "y"]}
    assert fresh.post("/predict", json=body).status_code == 200
    found = samples(fresh)
    model = {"model": "movielens", "version": str(artifact.manifest.version)}
    labels = {"handler": "/predict", "method": "POST", **model}
    assert value(found, "hydrarec_http_requests_total", status="2xx", **labels) == 1
    assert value(found, "hydrarec_http_request_duration_seconds_count", **labels) == 1
    assert value(found, "hydrarec_predict_candidates_sum") == 3
    for stage in ("encode", "infer", "rank"):
        assert value(found, "hydrarec_predict_stage_duration_seconds_count", stage=stage) == 1
    assert value(found, "hydrarec_ids_total", kind="candidate") == 3
    assert value(found, "hydrarec_unknown_ids_total", kind="candidate") == 1
    assert value(found, "hydrarec_unknown_ids_total", kind="history") == 1
    assert value(found, "hydrarec_unknown_ids_total", kind="user") == 1
    assert value(found, "hydrarec_http_requests_in_progress", handler="/predict") == 0
    assert value(found, "hydrarec_prediction_probability_count", task="click", **model) == 1


def test_paths_are_labelled_by_route_never_raw(fresh: TestClient, artifact: Artifact) -> None:
    fresh.get("/v1/models/some-id-12345")
    fresh.get("/readyz")
    found = samples(fresh)
    labels = {"method": "GET", "model": "movielens", "version": str(artifact.manifest.version)}
    requests = "hydrarec_http_requests_total"
    assert value(found, requests, handler="other", status="4xx", **labels) == 1
    assert value(found, requests, handler="/readyz", status="2xx", **labels) == 1
    assert not any("some-id" in str(key) for key in found)


FORKED_WRITES = """
import os, pathlib
import service.metrics  # multiprocess mode: the cached process id is installed at import
from prometheus_client import CollectorRegistry, Counter, values
from prometheus_client.multiprocess import MultiProcessCollector
assert values.ValueClass._multiprocess
counter = Counter("forked", "writes before and after a fork", registry=CollectorRegistry())
counter.inc()
child = os.fork()
if child == 0:
    counter.inc(2)
    os._exit(0)
os.waitpid(child, 0)
folder = pathlib.Path(os.environ["PROMETHEUS_MULTIPROC_DIR"])
registry = CollectorRegistry()
MultiProcessCollector(registry, str(folder))
print(sorted(p.name for p in folder.iterdir()), os.getpid(), child,
      registry.get_sample_value("forked_total"))
"""


def test_a_forked_child_writes_metrics_to_its_own_file(tmp_path: Path) -> None:
    """The process id is cached (no getpid per update), yet a fork still gets its own file,
    and the sum over the files counts both processes' updates."""
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(tmp_path)}
    out = subprocess.run(
        [sys.executable, "-c", FORKED_WRITES], env=env, capture_output=True, text=True, check=True
    ).stdout.split()
    *files, parent, child, total = (x.strip("[],'") for x in out)
    assert files == sorted([f"counter_{parent}.db", f"counter_{child}.db"])
    assert float(total) == 3.0
