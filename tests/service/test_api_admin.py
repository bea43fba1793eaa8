"""POST /admin/reload: newer versions swap in, bad ones are rejected with the old one serving."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from service.artifact import Artifact
from service.main import create_app
from tests.service.conftest import publish_copy, settings_for

KEY = "an-admin-key-of-some-length"
ADMIN = {"x-api-key": KEY}


def test_admin_routes_do_not_exist_without_a_key(client: TestClient) -> None:
    response = client.post("/admin/reload")
    assert response.status_code == 404
    assert "HYDRAREC_API_KEY" in response.json()["message"]


@pytest.fixture
def admin(repository_copy: Path) -> Iterator[TestClient]:
    """An app on a repository copy, with admin routes and no poller (reloads on request)."""
    settings = settings_for(repository_copy, api_key=KEY, model_poll_seconds=0)
    with TestClient(create_app(settings)) as client:
        yield client


def test_reload_swaps_in_newer_versions_and_rejects_bad_ones(
    admin: TestClient, repository_copy: Path, artifact: Artifact
) -> None:
    served = artifact.manifest.version
    assert admin.post("/admin/reload").status_code == 401
    same = admin.post("/admin/reload", headers=ADMIN).json()
    assert same == {"version": str(served), "reloaded": False}

    # Given: a newer, intact version
    publish_copy(repository_copy, artifact.path, served + 1)
    newer = admin.post("/admin/reload", headers=ADMIN).json()
    assert newer == {"version": str(served + 1), "reloaded": True}
    body = {"user_id": "196", "candidates": ["1"]}
    assert admin.post("/predict", json=body, headers=ADMIN).json()["model"]["version"] == str(
        served + 1
    )

    # Given: a still newer one whose model file was damaged after publishing
    broken = publish_copy(repository_copy, artifact.path, served + 2)
    with (broken / "model.onnx").open("ab") as f:
        f.write(b"\0")
    refused = admin.post("/admin/reload", headers=ADMIN)
    assert refused.status_code == 409
    assert "sha256 of model.onnx" in refused.json()["message"]
    again = admin.post("/admin/reload", headers=ADMIN)
    assert "rejected and has not changed" in again.json()["message"]
    assert admin.get("/readyz").json()["version"] == str(served + 1)
    metrics = admin.get("/metrics").text
    assert 'hydrarec_model_loads_total{result="failure"} 1.0' in metrics
    assert 'hydrarec_model_loads_total{result="success"} 2.0' in metrics
    assert f'hydrarec_model_info{{model="movielens",version="{served}"}} 0.0' in metrics


def test_the_poller_logs_a_rejected_version_once_and_retries_it_when_it_changes(
    repository_copy: Path, artifact: Artifact, caplog: pytest.LogCaptureFixture
) -> None:
    served = artifact.manifest.version
    settings = settings_for(repository_copy, api_key=KEY, model_poll_seconds=0.05)
    with TestClient(create_app(settings)) as client:
        # Given: a newer version whose model file has not arrived yet (a copy under way)
        newer = publish_copy(repository_copy, artifact.path, served + 1)
        model = (newer / "model.onnx").read_bytes()
        (newer / "model.onnx").unlink()
        with caplog.at_level(logging.INFO, logger="hydrarec"):
            time.sleep(1.0)  # some twenty polls
            rejections = [r for r in caplog.records if "rejected version" in r.getMessage()]
            assert len(rejections) == 1, [r.getMessage() for r in caplog.records]
            assert rejections[0].exc_info is None  # one line, no traceback
            assert client.get("/readyz").json()["version"] == str(served)
            # When: the copy completes (its manifest unchanged, only the content is new)
            (newer / "model.onnx").write_bytes(model)
            deadline = time.monotonic() + 10
            while client.get("/readyz").json()["version"] != str(served + 1):
                assert time.monotonic() < deadline, "the completed version was never served"
                time.sleep(0.05)
        assert client.get("/v1/models", headers=ADMIN).json()["models"][0]["rejected"] == []


def test_behind_a_bad_newest_version_the_newest_good_one_is_served(
    admin: TestClient, repository_copy: Path, artifact: Artifact
) -> None:
    served = artifact.manifest.version
    # Given: two newer versions, the newest damaged
    publish_copy(repository_copy, artifact.path, served + 1)
    publish_copy(repository_copy, artifact.path, served + 2, damaged=True)
    # When
    answer = admin.post("/admin/reload", headers=ADMIN).json()
    # Then: the good one swaps in, the bad one is listed with its reason
    assert answer == {"version": str(served + 1), "reloaded": True}
    (rejected,) = admin.get("/v1/models", headers=ADMIN).json()["models"][0]["rejected"]
    assert rejected["version"] == str(served + 2)
    assert "sha256 of model.onnx" in rejected["reason"]
