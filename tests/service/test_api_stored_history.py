"""/predict and the Open Inference Protocol without `history`, on each real store: the user's
stored history is used (in time order, the model's window), the answer says so, a body's history
wins, recommend mode leaves out every item the user touched, and a store that is down is a 503
only for the requests that need it."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
import tritonclient.http as triton
from fastapi.testclient import TestClient

from harness.processes import free_port
from service.main import create_app
from tests.service.conftest import settings_for

CANDIDATES = ["1", "50", "181", "100", "258", "7"]


@pytest.fixture
def client(store_url: str) -> Iterator[TestClient]:
    with TestClient(create_app(settings_for(store_url=store_url))) as c:
        yield c


def events(user: str, items: list[str], start: float = 1000.0) -> dict[str, Any]:
    return {
        "events": [
            {"user_id": user, "item_id": item, "timestamp": start + i}
            for i, item in enumerate(items)
        ]
    }


def predict(client: TestClient, **body: Any) -> Any:
    answer = client.post("/predict", json={"user_id": "196", **body})
    assert answer.status_code == 200, answer.text
    return answer.json()


def test_a_request_without_history_is_answered_with_the_stored_one(client: TestClient) -> None:
    stored = ["242", "302", "377", "51", "346"]
    late_first = {"events": list(reversed(events("196", stored)["events"]))}
    assert client.post("/events", json=late_first).status_code == 200  # out of time order
    from_store = predict(client, candidates=CANDIDATES)
    from_body = predict(client, candidates=CANDIDATES, history=stored)
    assert from_store["history_source"] == "store"
    assert from_body["history_source"] == "request"
    assert from_store["items"] == from_body["items"]
    assert from_store["user"] == from_body["user"]
    shuffled = predict(client, candidates=CANDIDATES, history=stored[::-1])
    assert shuffled["items"] != from_store["items"]  # order matters: the store kept time order


def test_the_body_wins_even_an_empty_history(client: TestClient) -> None:
    empty = predict(client, candidates=CANDIDATES, history=[])
    client.post("/events", json=events("196", ["242", "302", "377"]))
    assert predict(client, candidates=CANDIDATES, history=[]) == empty
    assert predict(client, candidates=CANDIDATES)["items"] != empty["items"]


def test_the_window_is_the_last_events_of_a_long_history(client: TestClient) -> None:
    window = client.get("/v1/models").json()["models"][0]["history_length"]
    items = [str(i) for i in range(1, window + 21)]
    for start in range(0, len(items), 10):
        batch = events("196", items[start : start + 10], start=1000.0 + start)
        assert client.post("/events", json=batch).status_code == 200
    stored = predict(client, candidates=CANDIDATES)
    assert (
        stored["items"] == predict(client, candidates=CANDIDATES, history=items[-window:])["items"]
    )


def test_recommend_mode_leaves_out_every_touched_item_by_default(client: TestClient) -> None:
    window = client.get("/v1/models").json()["models"][0]["history_length"]
    popular = [i["item_id"] for i in predict(client, history=[], top_k=100)["items"]]
    catalogue = [str(i) for i in range(1, 1683)]
    recent = [i for i in catalogue if i not in popular][:window]
    client.post("/events", json=events("196", popular[:50], start=10.0))  # touched long ago
    client.post("/events", json=events("196", popular[50:], start=100.0))
    client.post("/events", json=events("196", recent[:50], start=1000.0))  # the window
    client.post("/events", json=events("196", recent[50:], start=2000.0))
    default = predict(client, top_k=100)
    assert default["history_source"] == "store"
    assert not {i["item_id"] for i in default["items"]} & {*popular, *recent}
    only_window = predict(client, top_k=100, exclude_touched=False)
    returned = {i["item_id"] for i in only_window["items"]}
    assert not returned & set(recent)
    assert returned & set(popular)  # touched before the window: back without the default


def test_the_inference_protocol_reads_the_store_without_the_history_input(
    client: TestClient,
) -> None:
    stored = ["242", "302", "377"]
    client.post("/events", json=events("196", stored))
    expected = predict(client, candidates=CANDIDATES)
    model = client.get("/v1/models").json()["models"][0]["name"]
    body = {
        "inputs": [
            {"name": "user_id", "datatype": "BYTES", "shape": [1], "data": ["196"]},
            {"name": "candidates", "datatype": "BYTES", "shape": [1, 6], "data": CANDIDATES},
        ]
    }
    answer = client.post(f"/v2/models/{model}/infer", json=body)
    assert answer.status_code == 200, answer.text
    assert answer.json()["parameters"] == {"history_source": "store"}
    click = next(o for o in answer.json()["outputs"] if o["name"] == "click")["data"]
    by_item = {i["item_id"]: i["click"] for i in expected["items"]}
    np.testing.assert_allclose(click, [by_item[c] for c in CANDIDATES], rtol=1e-6)
    history = {"name": "history", "datatype": "BYTES", "shape": [1, 1], "data": ["242"]}
    carried = client.post(f"/v2/models/{model}/infer", json={"inputs": [*body["inputs"], history]})
    assert carried.json()["parameters"] == {"history_source": "request"}


def test_a_store_that_is_down_refuses_only_the_requests_that_need_it() -> None:
    down = f"redis://127.0.0.1:{free_port()}/0"
    with TestClient(create_app(settings_for(store_url=down))) as client:
        needs = client.post("/predict", json={"user_id": "196", "candidates": CANDIDATES})
        assert needs.status_code == 503, needs.text
        assert needs.json()["error"] == "store_unavailable"
        assert needs.headers["Retry-After"] == "1"
        assert client.post("/predict", json={"user_id": "196", "top_k": 5}).status_code == 503
        carried = {"user_id": "196", "history": [], "candidates": CANDIDATES}
        assert client.post("/predict", json=carried).status_code == 200
        model = client.get("/v1/models").json()["models"][0]["name"]
        user = {"name": "user_id", "datatype": "BYTES", "shape": [1], "data": ["196"]}
        protocol = client.post(f"/v2/models/{model}/infer", json={"inputs": [user]})
        assert protocol.status_code == 503, protocol.text
        assert protocol.headers["Retry-After"] == "1"
        assert "event store" in protocol.json()["error"]
        metrics = client.get("/metrics").text
    assert 'hydrarec_predict_failures_total{reason="store_unavailable"} 3.0' in metrics
    assert 'hydrarec_store_errors_total{backend="redis",operation="history"} 3.0' in metrics


def test_a_triton_client_is_answered_from_the_store(client: TestClient) -> None:
    """The protocol's own client encodes the request (binary tensors): no history input."""
    client.post("/events", json=events("196", ["242", "302"]))
    user = triton.InferInput("user_id", [1], "BYTES")
    user.set_data_from_numpy(np.array(["196"], dtype=object), binary_data=True)
    candidates = triton.InferInput("candidates", [1, len(CANDIDATES)], "BYTES")
    candidates.set_data_from_numpy(np.array([CANDIDATES], dtype=object), binary_data=True)
    body, length = triton.InferenceServerClient.generate_request_body([user, candidates])
    model = client.get("/v1/models").json()["models"][0]["name"]
    headers = {"Inference-Header-Content-Length": str(length)}
    answer = client.post(f"/v2/models/{model}/infer", content=body, headers=headers)
    assert answer.status_code == 200, answer.text
    result = triton.InferenceServerClient.parse_response_body(
        answer.content, header_length=int(answer.headers["Inference-Header-Content-Length"])
    )
    assert result.get_response()["parameters"] == {"history_source": "store"}
    expected = predict(client, candidates=CANDIDATES)
    by_item = {i["item_id"]: i["click"] for i in expected["items"]}
    np.testing.assert_allclose(
        result.as_numpy("click")[0], [by_item[c] for c in CANDIDATES], rtol=1e-6
    )
