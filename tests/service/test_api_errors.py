"""Every bad request gets its 4xx and a message naming the field; none gets a 500."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from service.main import create_app
from service.schemas import MAX_ID_LENGTH
from tests.service.conftest import settings_for

OK = {"user_id": "196", "candidates": ["1", "50"]}
JSON = {"content-type": "application/json"}


@pytest.fixture(scope="module")
def small() -> Iterator[TestClient]:
    """An app with tight limits: 3 candidates, 2 KiB bodies."""
    with TestClient(create_app(settings_for(max_candidates=3, max_body_bytes=2048))) as c:
        yield c


@pytest.mark.parametrize(
    ("body", "field", "words"),
    [
        ({"candidates": ["1"]}, "user_id", "required"),
        ({"user_id": 196, "candidates": ["1"]}, "user_id", "valid string"),
        ({"user_id": "1", "candidates": "1"}, "candidates", "valid array"),
        ({"user_id": "1", "candidates": ["1", 2]}, "candidates[1]", "valid string"),
        ({"user_id": "1", "candidates": []}, "candidates", "at least 1"),
        ({"user_id": "1", "candidates": ["1", "1"]}, "candidates", "distinct"),
        ({"user_id": "", "candidates": ["1"]}, "user_id", "at least 1"),
        ({"user_id": "u" * (MAX_ID_LENGTH + 1), "candidates": ["1"]}, "user_id", "at most"),
        ({"user_id": "1", "history": ["x" * 300], "candidates": ["1"]}, "history[0]", "at most"),
        ({"user_id": "1", "candidates": ["1"], "top_k": 0}, "top_k", "greater than or equal"),
        ({"user_id": "1", "candidates": ["1"], "top_k": "3"}, "top_k", "valid integer"),
        ({"user_id": "1", "candidates": ["1"], "weights": {"clik": 1}}, "weights.clik", "click"),
        ({"user_id": "1", "candidates": ["1"], "weights": {"gender": 1}}, "weights.gender", "item"),
        (
            {"user_id": "1", "candidates": ["1"], "weights": {"click": "a"}},
            "weights.click",
            "number",
        ),
        ({"user_id": "1", "candidates": ["1"], "extra": 1}, "extra", "not permitted"),
        (["not", "an", "object"], "body", "an object"),
    ],
)
def test_invalid_bodies_name_the_field(
    client: TestClient, body: object, field: str, words: str
) -> None:
    response = client.post("/predict", json=body)
    assert response.status_code == 422, response.text
    error = response.json()
    assert error["error"] == "invalid_input"
    assert field in [f["field"] for f in error["fields"]]
    assert words in error["message"]


@pytest.mark.parametrize("literal", ["NaN", "Infinity", "-Infinity"])
def test_non_finite_weights_are_refused(client: TestClient, literal: str) -> None:
    body = '{"user_id": "1", "candidates": ["1"], "weights": {"click": LITERAL}}'.replace(
        "LITERAL", literal
    )
    response = client.post("/predict", content=body, headers=JSON)
    assert response.status_code == 422
    assert response.json()["fields"][0]["field"] == "weights.click"
    assert "finite" in response.json()["message"]


@pytest.mark.parametrize("weight", [1e308, -1e308, 1.0000001e6])
def test_weights_beyond_a_million_are_refused(client: TestClient, weight: float) -> None:
    # 1e308 x two probabilities would overflow the score to infinity (written as null)
    body = {"user_id": "1", "candidates": ["1", "50"], "weights": {"click": weight, "like": weight}}
    response = client.post("/predict", json=body)
    assert response.status_code == 422
    assert response.json()["fields"][0]["field"] == "weights.click"


def test_the_largest_weights_still_give_finite_scores(client: TestClient) -> None:
    body = {"user_id": "1", "candidates": ["1", "50"], "weights": {"click": 1e6, "like": -1e6}}
    response = client.post("/predict", json=body)
    assert response.status_code == 200
    assert all(abs(item["score"]) <= 1e6 for item in response.json()["items"])


def test_malformed_json_says_where(client: TestClient) -> None:
    response = client.post("/predict", content='{"user_id": "1", ', headers=JSON)
    assert response.status_code == 422
    assert response.json()["fields"][0]["field"] == "body"
    assert "Invalid JSON: EOF while parsing" in response.json()["message"]


@pytest.mark.parametrize("content_type", [None, "text/plain", "application/x-www-form-urlencoded"])
def test_bodies_not_sent_as_json_get_415(client: TestClient, content_type: str | None) -> None:
    headers = {"content-type": content_type} if content_type else {}
    response = client.post(
        "/predict", content=b'{"user_id": "1", "candidates": ["1"]}', headers=headers
    )
    assert response.status_code == 415
    assert "application/json" in response.json()["message"]


def test_too_many_candidates(small: TestClient) -> None:
    response = small.post("/predict", json={"user_id": "1", "candidates": ["1", "2", "3", "4"]})
    assert response.status_code == 422
    assert "HYDRAREC_MAX_CANDIDATES" in response.json()["message"]
    assert small.post("/predict", json={"user_id": "1", "candidates": ["1", "2", "3"]}).is_success


def test_oversized_body_by_content_length(small: TestClient) -> None:
    body = {"user_id": "1", "history": ["1"] * 1000, "candidates": ["1"]}
    response = small.post("/predict", json=body)
    assert response.status_code == 413
    assert response.json()["error"] == "too_large"
    assert "HYDRAREC_MAX_BODY_BYTES=2048" in response.json()["message"]


def test_oversized_chunked_body_is_cut_short(small: TestClient) -> None:
    def chunks() -> Iterator[bytes]:  # no Content-Length: the server must count
        yield b'{"user_id": "1", "history": ['
        for _ in range(1000):
            yield b'"1", '
        yield b'"1"], "candidates": ["1"]}'

    response = small.post("/predict", content=chunks(), headers=JSON)
    assert response.status_code == 413


def test_small_chunked_body_is_served(small: TestClient) -> None:
    def chunks() -> Iterator[bytes]:
        yield b'{"user_id": "1", '
        yield b'"candidates": ["1"]}'

    assert small.post("/predict", content=chunks(), headers=JSON).status_code == 200


def test_unknown_routes_and_methods(client: TestClient) -> None:
    assert client.get("/nope").json()["error"] == "not_found"
    response = client.get("/predict")
    assert response.status_code == 405
    assert response.json()["error"] == "method_not_allowed"


def test_failures_are_counted_by_reason(small: TestClient) -> None:
    def count(reason: str) -> float:
        for line in small.get("/metrics").text.splitlines():
            if line.startswith(f'hydrarec_predict_failures_total{{reason="{reason}"}}'):
                return float(line.split()[-1])
        raise AssertionError(reason)

    before = {r: count(r) for r in ("invalid_input", "too_large")}
    small.post("/predict", json={"user_id": "1", "candidates": []})
    small.post("/predict", json={"user_id": "1", "history": ["1"] * 1000, "candidates": ["1"]})
    assert count("invalid_input") == before["invalid_input"] + 1
    assert count("too_large") == before["too_large"] + 1
