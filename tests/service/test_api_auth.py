"""HYDRAREC_API_KEY guards /predict and /v1/models; probes stay open; the key is never logged."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient
from pydantic import ValidationError

from service.main import create_app
from tests.service.conftest import settings_for

KEY = "k3y-0f-s1xteen+chars"
BODY = {"user_id": "196", "candidates": ["1", "50"]}


@pytest.fixture(scope="module")
def guarded() -> Iterator[TestClient]:
    with TestClient(create_app(settings_for(api_key=KEY))) as c:
        yield c


@pytest.mark.parametrize(
    "headers",
    [{}, {"x-api-key": "wrong-key-of-enough-length"}, {"authorization": f"Basic {KEY}"}],
    ids=["none", "wrong", "not-bearer"],
)
def test_guarded_routes_refuse_without_the_key(guarded: TestClient, headers: dict) -> None:
    response = guarded.post("/predict", json=BODY, headers=headers)
    assert response.status_code == 401
    assert response.json()["error"] == "unauthorized"
    assert response.headers["www-authenticate"].startswith("Bearer")
    assert guarded.get("/v1/models", headers=headers).status_code == 401


@pytest.mark.parametrize(
    "headers", [{"x-api-key": KEY}, {"authorization": f"Bearer {KEY}"}], ids=["header", "bearer"]
)
def test_the_key_opens_them(guarded: TestClient, headers: dict) -> None:
    assert guarded.post("/predict", json=BODY, headers=headers).status_code == 200
    assert guarded.get("/v1/models", headers=headers).status_code == 200


def test_probes_stay_open(guarded: TestClient) -> None:
    for path in ("/healthz", "/readyz", "/metrics"):
        assert guarded.get(path).status_code == 200, path


def test_refusals_are_counted_and_the_key_is_never_logged(
    guarded: TestClient, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level("DEBUG")
    guarded.post("/predict", json=BODY, headers={"x-api-key": KEY})
    guarded.post("/predict", json=BODY, headers={"x-api-key": "wrong-key-of-enough-length"})
    metrics = guarded.get("/metrics").text
    (line,) = [
        x
        for x in metrics.splitlines()
        if x.startswith('hydrarec_predict_failures_total{reason="unauthorized"}')
    ]
    assert float(line.split()[-1]) >= 1
    assert KEY not in caplog.text
    assert KEY not in metrics


def test_a_short_key_is_refused() -> None:
    with pytest.raises(ValidationError, match="api_key"):
        settings_for(api_key="short")
