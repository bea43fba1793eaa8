"""POST /predict through the ASGI app on the committed default model."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest
from fastapi.testclient import TestClient

from service.artifact import FIRST_ID, PAD, UNK, Artifact
from service.main import create_app
from tests.service.conftest import settings_for

HISTORY = ["242", "302", "377", "51", "346"]
CANDIDATES = ["1", "50", "181", "100", "258", "294", "286", "288", "300", "121", "7", "9"]


def predict(client: TestClient, **body: object) -> dict:
    response = client.post(
        "/predict", json={"user_id": "196", "history": HISTORY, "candidates": CANDIDATES} | body
    )
    assert response.status_code == 200, response.text
    return response.json()


def test_every_task_is_answered_with_probabilities(client: TestClient, artifact: Artifact) -> None:
    out = predict(client, top_k=len(CANDIDATES))
    manifest = artifact.manifest
    assert out["model"] == {"name": "movielens", "version": str(manifest.version)}
    for task in manifest.tasks:
        if task.level == "user":
            probabilities = out["user"][task.name]
            assert list(probabilities) == list(task.classes)
            assert all(0 <= p <= 1 for p in probabilities.values())
            assert sum(probabilities.values()) == pytest.approx(1, abs=1e-5)
    assert sorted(i["item_id"] for i in out["items"]) == sorted(CANDIDATES)
    for item in out["items"]:
        assert 0 <= item["click"] <= 1
        assert 0 <= item["like"] <= 1
        assert item["score"] == pytest.approx(item["click"] + item["like"])  # manifest default


@pytest.mark.parametrize("weights", [{"click": 1.0}, {"like": 1.0}, {"click": 2.0, "like": -0.5}])
def test_ranking_follows_the_weights(client: TestClient, weights: dict[str, float]) -> None:
    items = predict(client, weights=weights, top_k=len(CANDIDATES))["items"]
    expected = [sum(w * item[t] for t, w in weights.items()) for item in items]
    assert [i["score"] for i in items] == pytest.approx(expected)
    assert expected == sorted(expected, reverse=True)


def test_weights_change_the_order(client: TestClient) -> None:
    by_click = [i["item_id"] for i in predict(client, weights={"click": 1.0})["items"]]
    by_like = [i["item_id"] for i in predict(client, weights={"like": 1.0})["items"]]
    assert by_click != by_like


def test_top_k_cuts_and_defaults_to_the_manifest(client: TestClient, artifact: Artifact) -> None:
    full = predict(client, top_k=len(CANDIDATES))["items"]
    assert predict(client, top_k=3)["items"] == full[:3]
    assert len(predict(client)["items"]) == min(artifact.manifest.ranking.top_k, len(CANDIDATES))
    assert len(predict(client, top_k=1000)["items"]) == len(CANDIDATES)


def test_unknown_ids_are_served_and_listed(client: TestClient) -> None:
    out = predict(
        client,
        user_id="no-such-user",
        history=["242", "ghost", "302", "ghost"],
        candidates=["1", "not-an-item"],
    )
    assert out["unknown"] == {
        "user_id": True,
        "history": ["ghost"],
        "candidates": ["not-an-item"],
    }
    assert {i["item_id"] for i in out["items"]} == {"1", "not-an-item"}


def test_a_cold_user_with_no_history_is_served(client: TestClient) -> None:
    out = predict(client, user_id="new", history=[])
    assert out["unknown"]["user_id"] is True
    assert sum(out["user"]["gender"].values()) == pytest.approx(1, abs=1e-5)


def test_numbers_equal_a_direct_onnxruntime_run(client: TestClient, artifact: Artifact) -> None:
    # Given: the graph inputs built by hand from the vocabulary files
    manifest = artifact.manifest
    users = artifact.read_vocab("user_id")
    items = artifact.read_vocab("item_id")
    history = np.full((1, manifest.history_length), PAD, dtype=np.int64)
    history[0, -len(HISTORY) :] = [items.index(i) + FIRST_ID for i in HISTORY]
    candidates = [*CANDIDATES, "unknown-item"]
    inputs = {
        "user_id": np.array([users.index("196") + FIRST_ID], dtype=np.int64),
        "history": history,
        "candidate": np.array(
            [items.index(c) + FIRST_ID if c in items else UNK for c in candidates], dtype=np.int64
        ),
        "candidate_row": np.zeros(len(candidates), dtype=np.int64),
    }
    session = ort.InferenceSession(str(artifact.path / "model.onnx"))
    direct = dict(zip([o.name for o in manifest.outputs], session.run(None, inputs), strict=True))

    # When
    out = predict(client, candidates=candidates, top_k=len(candidates))

    # Then
    by_id = {i["item_id"]: i for i in out["items"]}
    for task in ("click", "like"):
        served = [by_id[c][task] for c in candidates]
        np.testing.assert_allclose(served, direct[task], rtol=1e-6, atol=1e-7)
    for task in ("gender", "age", "occupation"):
        np.testing.assert_allclose(list(out["user"][task].values()), direct[task][0], atol=1e-7)


def test_history_keeps_the_last_l_items(client: TestClient, artifact: Artifact) -> None:
    length = artifact.manifest.history_length
    items = artifact.read_vocab("item_id")
    long_history = items[: length + 30]
    assert predict(client, history=long_history) == predict(client, history=long_history[-length:])
    assert predict(client, history=long_history) != predict(client, history=long_history[:length])


def test_requests_wait_for_readiness() -> None:
    app = create_app(settings_for())  # lifespan not entered: nothing is loaded
    client = TestClient(app)
    response = client.post("/predict", json={"user_id": "1", "candidates": ["1"]})
    assert response.status_code == 503
    assert response.headers["retry-after"] == "1"
    assert response.json()["error"] == "not_ready"
    assert client.get("/readyz").status_code == 503
    assert client.get("/healthz").json() == {"status": "ok"}
