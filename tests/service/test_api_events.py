"""POST /events through the app, on each real store: a batch is stored whole and answered 200,
a retry is stored once, bad bodies get a 422 naming the field and store nothing, the key is
required where one is configured, and a store that is down is a 503 with Retry-After that
stores nothing while the service keeps serving."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from eventstore import open_store
from harness.processes import free_port
from service.main import create_app
from tests.service.conftest import settings_for

KEY = "k" * 32


@pytest.fixture
def client(store_url: str) -> Iterator[TestClient]:
    with TestClient(create_app(settings_for(store_url=store_url, max_events=5))) as c:
        yield c


def post(client: TestClient, body: Any, **headers: str) -> Any:
    return client.post("/events", json=body, headers=headers)


def test_a_batch_is_stored_whole_and_a_retry_once(client: TestClient, store_url: str) -> None:
    batch = {
        "events": [
            {"user_id": "196", "item_id": "242", "timestamp": 100, "rating": 3, "event_id": "a"},
            {"user_id": "196", "item_id": "50", "timestamp": 50.5, "event_id": "b"},
            {"user_id": "new user", "item_id": "new item"},
        ]
    }
    answer = post(client, batch)
    assert answer.status_code == 200, answer.text
    assert answer.json() == {"stored": 3, "new": 3, "duplicates": 0}
    again = post(client, {"events": batch["events"][:2]})
    assert again.json() == {"stored": 2, "new": 0, "duplicates": 2}
    store = open_store(store_url)
    assert store.recent("196", 10) == ["50", "242"]  # time order, not arrival order
    assert store.recent("new user", 10) == ["new item"]
    stamped = [e for e in store.log() if e.user_id == "new user"][0]
    assert stamped.timestamp > 1.7e9  # the server's clock, Unix seconds
    assert len(list(store.log())) == 3
    store.close()


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"events": []}, "events"),
        ({"events": [{"user_id": "1"}]}, "events[0].item_id"),
        ({"events": [{"user_id": "1", "item_id": "2"}, {"user_id": "", "item_id": "2"}]},
         "events[1].user_id"),
        ({"events": [{"user_id": "1", "item_id": 2}]}, "events[0].item_id"),
        ({"events": [{"user_id": "1", "item_id": "2", "timestamp": -1}]}, "events[0].timestamp"),
        ({"events": [{"user_id": "1", "item_id": "2", "timestamp": 1.7e12}]},
         "events[0].timestamp"),
        ({"events": [{"user_id": "1", "item_id": "2", "rating": "high"}]}, "events[0].rating"),
        ({"events": [{"user_id": "1", "item_id": "2", "colour": "red"}]}, "events[0].colour"),
        ({"events": [{"user_id": "1", "item_id": "2"}] * 6}, "events"),
        ({"event": []}, "events"),
    ],
)  # fmt: skip
def test_a_bad_body_names_the_field_and_stores_nothing(
    client: TestClient, store_url: str, body: Any, field: str
) -> None:
    answer = post(client, body)
    assert answer.status_code == 422, answer.text
    assert answer.json()["error"] == "invalid_input"
    assert field in [f["field"] for f in answer.json()["fields"]], answer.json()
    store = open_store(store_url)
    assert list(store.log()) == []
    store.close()


def test_the_batch_limit_is_said_plainly(client: TestClient) -> None:
    answer = post(client, {"events": [{"user_id": "1", "item_id": "2"}] * 6})
    assert "at most 5 events per request (HYDRAREC_MAX_EVENTS); got 6" in answer.json()["message"]


def test_events_need_the_api_key_where_one_is_set(tmp_path: Path) -> None:
    settings = settings_for(store_url=f"sqlite:///{tmp_path}/e.db", api_key=KEY)
    with TestClient(create_app(settings)) as client:
        body = {"events": [{"user_id": "1", "item_id": "2"}]}
        assert post(client, body).status_code == 401
        assert post(client, body, **{"X-API-Key": KEY}).status_code == 200


def test_a_store_that_is_down_is_a_503_and_the_service_keeps_serving() -> None:
    down = f"redis://127.0.0.1:{free_port()}/0"  # nothing listens: down from the start
    with TestClient(create_app(settings_for(store_url=down))) as client:
        answer = post(client, {"events": [{"user_id": "1", "item_id": "2"}]})
        assert answer.status_code == 503
        assert answer.json()["error"] == "store_unavailable"
        assert answer.headers["Retry-After"] == "1"
        predicted = client.post(
            "/predict", json={"user_id": "196", "history": ["242"], "candidates": ["50", "1"]}
        )
        assert predicted.status_code == 200
        assert client.get("/readyz").status_code == 200
        metrics = client.get("/metrics").text
    assert 'hydrarec_event_batches_refused_total{reason="store_unavailable"} 1.0' in metrics
    assert 'hydrarec_store_errors_total{backend="redis",operation="add"} 1.0' in metrics


def test_accepted_events_and_store_latency_are_counted(client: TestClient, store_url: str) -> None:
    post(client, {"events": [{"user_id": "1", "item_id": "2"}, {"user_id": "1", "item_id": "3"}]})
    post(client, {"events": []})
    metrics = client.get("/metrics").text
    backend = store_url.split(":")[0]
    assert "hydrarec_events_accepted_total 2.0" in metrics
    assert 'hydrarec_event_batches_refused_total{reason="invalid_input"} 1.0' in metrics
    assert f'hydrarec_store_duration_seconds_count{{backend="{backend}",operation="add"}} 1.0' in (
        metrics
    )


def test_a_store_file_that_cannot_be_opened_stops_the_start(tmp_path: Path) -> None:
    (tmp_path / "events.db").write_bytes(b"not a database" * 100)
    app = create_app(settings_for(store_url=f"sqlite:///{tmp_path}/events.db"))
    with pytest.raises(Exception, match="cannot open it as the event store"):
        with TestClient(app):
            pass
