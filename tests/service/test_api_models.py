"""GET /v1/models, /healthz, /readyz and the OpenAPI document."""

from __future__ import annotations

from pathlib import Path

from fastapi.testclient import TestClient

from service.artifact import Artifact, Manifest, write_manifest
from service.main import create_app
from service.schemas import (
    EXPLAIN_EXAMPLE,
    RECOMMEND_EXAMPLE,
    REQUEST_EXAMPLE,
    STORED_EXAMPLE,
)
from tests.service.conftest import settings_for


def test_models_summarises_the_manifest(client: TestClient, artifact: Artifact) -> None:
    (model,) = client.get("/v1/models").json()["models"]
    manifest = artifact.manifest
    assert (model["name"], model["version"]) == (manifest.name, str(manifest.version))
    assert [t["name"] for t in model["tasks"]] == [t.name for t in manifest.tasks]
    assert model["tasks"][2]["classes"] == list(manifest.tasks[2].classes)
    assert model["ranking_weights"] == manifest.ranking.weights
    assert model["vocabulary_sizes"] == {"user_id": 943, "item_id": 1684, "genres": 19}
    assert model["catalogue"] == {
        "items": 1684,
        "trained_ids": manifest.catalogue.n_trained,
        "features": {"genres": "multi_categorical", "year": "numeric", "title": "text"},
    }
    assert model["catalogue"]["trained_ids"] == 1682, "the refit trained every rated item"
    assert model["metrics"]["click_auc"] == manifest.metrics["click_auc"]
    # the figures are said to be the held-out estimate of weights refit on all of the data
    fit = model["fit"]
    assert fit["refit"]
    assert "estimate" in fit["metrics_are"]
    assert (fit["events"], fit["users"], fit["items"]) == (100_000, 943, 1682)
    assert fit["user_labels"] == {"gender": 943, "age": 943, "occupation": 943}


def test_an_artifact_from_before_the_refit_says_nothing_of_it(repository_copy: Path) -> None:
    # Given the default model's manifest as written before `fit` existed
    folder = next((repository_copy / "movielens").iterdir())
    manifest = Manifest.model_validate_json((folder / "manifest.json").read_text())
    write_manifest(folder, manifest.model_copy(update={"fit": None}))

    # Then it serves, and /v1/models has no fit for it
    with TestClient(create_app(settings_for(repository_copy))) as client:
        (model,) = client.get("/v1/models").json()["models"]
    assert model["fit"] is None
    assert model["metrics"] == manifest.metrics


def test_health_and_readiness(client: TestClient, artifact: Artifact) -> None:
    assert client.get("/healthz").json() == {"status": "ok"}
    version = str(artifact.manifest.version)
    assert client.get("/readyz").json() == {
        "status": "ready",
        "model": "movielens",
        "version": version,
    }


def test_openapi_documents_the_contract_with_an_example(client: TestClient) -> None:
    doc = client.get("/openapi.json").json()
    operation = doc["paths"]["/predict"]["post"]
    assert {"200", "413", "415", "422", "503"} <= set(operation["responses"])
    request = operation["requestBody"]["content"]["application/json"]["schema"]
    examples = [REQUEST_EXAMPLE, RECOMMEND_EXAMPLE, STORED_EXAMPLE, EXPLAIN_EXAMPLE]
    assert request["examples"] == examples
    assert set(request["properties"]) == {
        *REQUEST_EXAMPLE,
        *EXPLAIN_EXAMPLE,
        "exclude",
        "exclude_touched",
    }
    assert set(request["required"]) == {"user_id"}
    schemas = doc["components"]["schemas"]
    assert set(schemas["PredictResponse"]["properties"]) == {
        "model",
        "user",
        "items",
        "unknown",
        "history_source",
        "retrieved",
    }
    assert client.post("/predict", json=REQUEST_EXAMPLE).status_code == 200
    assert client.post("/predict", json=RECOMMEND_EXAMPLE).json()["retrieved"] > 0
