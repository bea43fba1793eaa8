"""Recommend mode: /predict without candidates retrieves from the whole catalogue through the
artifact's item vectors and a faiss index, drops what the request excludes, and ranks the rest
with the full model (the committed default model, a real onnxruntime session and index)."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
from fastapi.testclient import TestClient

from service.artifact import FIRST_ID, PAD, Artifact, ArtifactError, Manifest, write_manifest
from service.main import create_app
from service.retrieval import IndexSettings, Retriever
from tests.service.conftest import DEFAULT_MODEL, settings_for

EXACT = IndexSettings(exact_max=10**9, nlist=0, nprobe=32, threads=1)
HISTORY = ["242", "302", "377", "51", "346"]


def query_of(artifact: Artifact, user: int, history: list[int]) -> np.ndarray:
    """The graph's query vector for one user, straight from onnxruntime."""
    session = ort.InferenceSession(str(artifact.path / "model.onnx"))
    window = np.full((1, artifact.manifest.history_length), PAD, dtype=np.int64)
    window[0, -len(history) :] = history
    empty = np.zeros(0, dtype=np.int64)
    feed = {
        "user_id": np.array([user]),
        "history": window,
        "candidate": empty,
        "candidate_row": empty,
    }
    names = [o.name for o in session.get_outputs()]
    return dict(zip(names, session.run(None, feed), strict=True))["query"][0]


def test_the_exact_index_is_a_brute_force_dot_product(artifact: Artifact) -> None:
    retriever = Retriever.load(artifact, EXACT)
    assert retriever.kind == "exact"
    rng = np.random.default_rng(0)
    for _ in range(20):
        query = rng.normal(size=retriever.vectors.shape[1]).astype(np.float32)
        excluded = set((rng.integers(0, len(retriever), 30) + FIRST_ID).tolist())
        scores = retriever.vectors.astype(np.float64) @ query
        order = [i + FIRST_ID for i in np.argsort(-scores) if i + FIRST_ID not in excluded]
        found = retriever.search(query, 50, excluded)
        assert found.tolist() == order[:50]


def test_the_ivf_index_finds_the_exact_top_items_of_a_100k_catalogue(artifact: Artifact) -> None:
    """100,000 items spread like the default model's (its vectors, each copied with noise), the
    default IVF settings: at least 0.95 of the exact top 100 (`make bench` measures 1M)."""
    base = Retriever.load(artifact, EXACT).vectors
    rng = np.random.default_rng(1)
    noise = base.std(axis=0) * 0.3

    def spread(n: int) -> np.ndarray:
        picked = base[rng.integers(0, len(base), n)]
        return (picked + noise * rng.normal(size=picked.shape)).astype(np.float32)

    items, queries = spread(100_000), spread(50)
    exact = Retriever(items, EXACT)
    approximate = Retriever(items, IndexSettings(exact_max=0, nlist=0, nprobe=32, threads=1))
    assert approximate.kind == "ivf"
    recall = [
        len(
            set(exact.search(q, 100, set()).tolist())
            & set(approximate.search(q, 100, set()).tolist())
        )
        / 100
        for q in queries
    ]
    assert np.mean(recall) >= 0.95


def test_recommend_ranks_the_top_retrieved_items_as_candidate_mode_would(
    client: TestClient, artifact: Artifact
) -> None:
    exclude = ["50", "181", "100", "unknown-id"]
    body = {"user_id": "196", "history": HISTORY, "exclude": exclude, "top_k": 20}
    answer = client.post("/predict", json=body).json()

    assert answer["retrieved"] == 100  # HYDRAREC_RETRIEVE's default
    returned = [i["item_id"] for i in answer["items"]]
    assert len(returned) == 20
    assert not set(returned) & {*HISTORY, *exclude}
    ids = artifact.read_vocab("item_id")
    index = {item: FIRST_ID + i for i, item in enumerate(ids)}
    users = {u: FIRST_ID + i for i, u in enumerate(artifact.read_vocab("user_id"))}
    query = query_of(artifact, users["196"], [index[i] for i in HISTORY])
    dropped = {index[i] for i in [*HISTORY, *exclude] if i in index}
    scores = np.load(artifact.path / "retrieval" / "items.npy").astype(np.float64) @ query
    top = [ids[i] for i in np.argsort(-scores) if i + FIRST_ID not in dropped][:100]
    ranked = client.post(
        "/predict", json={"user_id": "196", "history": HISTORY, "candidates": top, "top_k": 20}
    ).json()
    assert ranked["items"] == answer["items"]
    assert ranked["user"] == answer["user"]
    assert "retrieved" not in ranked


def test_top_k_beyond_the_retrieved_items_returns_those_there_are(
    repository_copy: Path,
) -> None:
    with TestClient(create_app(settings_for(repository_copy, retrieve=5))) as client:
        answer = client.post("/predict", json={"user_id": "1", "top_k": 10}).json()
    assert answer["retrieved"] == 5
    assert len(answer["items"]) == 5


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"user_id": "1", "exclude": ["1", "2", "3", "4"]}, "exclude"),
        ({"user_id": "1", "exclude": ["1", ""]}, "exclude[1]"),
        ({"user_id": "1", "exclude": "1"}, "exclude"),
        ({"user_id": "1", "candidates": ["1"], "exclude": ["2"]}, "exclude"),
        ({"user_id": "1", "candidates": []}, "candidates"),
    ],
)
def test_bad_recommend_requests_name_the_field(
    repository_copy: Path, body: dict[str, object], field: str
) -> None:
    with TestClient(create_app(settings_for(repository_copy, max_exclude=3))) as client:
        response = client.post("/predict", json=body)
        assert response.status_code == 422
        assert [f["field"] for f in response.json()["fields"]] == [field]
        assert client.post("/predict", json={"user_id": "1"}).status_code == 200


def test_a_model_without_retrieval_answers_candidates_and_refuses_recommend_mode() -> None:
    """Version 12 predates schema 3: still served for requests with candidates."""
    with TestClient(create_app(settings_for(model_version=12))) as client:
        assert (
            client.post("/predict", json={"user_id": "1", "candidates": ["1"]}).status_code == 200
        )
        response = client.post("/predict", json={"user_id": "1"})
    assert response.status_code == 422
    assert response.json()["fields"][0]["field"] == "candidates"
    assert "version 12 has no retrieval" in response.json()["message"]


def rewrite_vectors(folder: Path, vectors: np.ndarray | None) -> None:
    """Replace (None: delete) the item vectors; the manifest hashes what is there."""
    path = folder / "retrieval" / "items.npy"
    if vectors is None:
        path.unlink()
    else:
        np.save(path, vectors, allow_pickle=False)
    manifest = Manifest.model_validate_json((folder / "manifest.json").read_text())
    write_manifest(folder, manifest.model_copy(update={"files": {}}))


@pytest.mark.parametrize(
    ("damage", "reason"),
    [
        (lambda v: v[:-1], r"float32 \[1683, 64\], the manifest says float32 \[1684, 64\]"),
        (lambda v: v.astype(np.float64), "item vectors are float64"),
        (lambda v: np.where(np.arange(len(v))[:, None] == 7, np.nan, v), "not all finite"),
        (lambda v: None, "retrieval/items.npy is not hashed in the manifest"),
    ],
)
def test_damaged_item_vectors_reject_the_version_and_the_older_one_serves(
    repository_copy: Path, artifact: Artifact, damage, reason: str
) -> None:
    good = repository_copy / DEFAULT_MODEL / artifact.path.name
    newer = good.parent / str(int(good.name) + 1)
    shutil.copytree(good, newer)
    vectors = np.load(newer / "retrieval" / "items.npy")
    manifest = Manifest.model_validate_json((newer / "manifest.json").read_text())
    write_manifest(newer, manifest.model_copy(update={"version": int(newer.name)}))
    rewrite_vectors(newer, damage(vectors))
    with TestClient(create_app(settings_for(repository_copy))) as client:
        assert client.get("/readyz").json()["version"] == good.name
        (rejected,) = client.get("/v1/models").json()["models"][0]["rejected"]
        assert rejected["version"] == newer.name
        assert re.search(reason, rejected["reason"])
        assert client.post("/predict", json={"user_id": "1"}).json()["retrieved"] == 100
    with pytest.raises(ArtifactError):
        with TestClient(create_app(settings_for(repository_copy, model_version=int(newer.name)))):
            pass


def test_a_rank_graph_that_does_not_load_rejects_the_version(repository_copy: Path) -> None:
    folder = next((repository_copy / DEFAULT_MODEL).iterdir())
    (folder / "retrieval" / "rank.onnx").write_bytes(b"not a graph")
    manifest = Manifest.model_validate_json((folder / "manifest.json").read_text())
    write_manifest(folder, manifest)
    with pytest.raises(ArtifactError, match="rank.onnx: onnxruntime cannot load it"):
        with TestClient(create_app(settings_for(repository_copy))):
            pass


def test_a_recommend_request_times_its_stages_once_each(repository_copy: Path) -> None:
    from prometheus_client.parser import text_string_to_metric_families

    with TestClient(create_app(settings_for(repository_copy))) as client:
        assert client.post("/predict", json={"user_id": "196"}).status_code == 200
        text = client.get("/metrics").text
    counts = {
        sample.labels["stage"]: sample.value
        for family in text_string_to_metric_families(text)
        if family.name == "hydrarec_predict_stage_duration_seconds"
        for sample in family.samples
        if sample.name.endswith("_count")
    }
    assert counts == dict.fromkeys(counts, 1.0) | {"explain": 0.0}  # not asked to explain
    assert {"encode", "infer", "retrieve", "rank"} <= set(counts)
