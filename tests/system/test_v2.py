"""The Open Inference Protocol, driven by Triton's own client (`tritonclient[http]`) against the
real server: readiness, metadata, infer in binary and JSON, numbers equal to /predict's,
output selection and the error cases."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import httpx2 as httpx
import numpy as np
import pytest
import tritonclient.http as triton
from prometheus_client.parser import text_string_to_metric_families
from tritonclient.utils import InferenceServerException

from harness.processes import Service, running_service, total

pytestmark = pytest.mark.system

MODEL = "movielens"
ROWS = [  # (user, history, candidates): different counts, so rows are padded
    ("196", ["242", "302", "377"], ["1", "50", "181", "100"]),
    ("22", ["377"], ["50", "172"]),
    ("999999", [], ["258"]),  # an unknown user with no history
]


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    folder = tmp_path_factory.mktemp("v2")
    with running_service(folder, HYDRAREC_WORKERS="1", HYDRAREC_MAX_CANDIDATES="50") as s:
        yield s


@pytest.fixture
def client(service: Service) -> Iterator[triton.InferenceServerClient]:
    c = triton.InferenceServerClient(service.url.removeprefix("http://"))
    yield c
    c.close()


def tensors(rows: list[tuple[str, list[str], list[str]]], binary: bool) -> list[triton.InferInput]:
    """The three BYTES inputs of `rows`, padded with empty strings."""
    width = max(len(r[2]) for r in rows)
    depth = max(len(r[1]) for r in rows)
    arrays = {
        "user_id": np.array([r[0].encode() for r in rows], dtype=object),
        "history": np.array(
            [[h.encode() for h in r[1]] + [b""] * (depth - len(r[1])) for r in rows], dtype=object
        ),
        "candidates": np.array(
            [[c.encode() for c in r[2]] + [b""] * (width - len(r[2])) for r in rows], dtype=object
        ),
    }
    out = []
    for name, array in arrays.items():
        tensor = triton.InferInput(name, list(array.shape), "BYTES")
        tensor.set_data_from_numpy(array, binary_data=binary)
        out.append(tensor)
    return out


def predict(service: Service, user: str, history: list[str], candidates: list[str]) -> dict:
    body = {"user_id": user, "history": history, "candidates": candidates, "top_k": 1000}
    answer = httpx.post(f"{service.url}/predict", json=body, timeout=10)
    assert answer.status_code == 200, answer.text
    return answer.json()


def test_the_server_and_the_model_are_live_ready_and_described(
    client: triton.InferenceServerClient, service: Service
) -> None:
    assert client.is_server_live()
    assert client.is_server_ready()
    assert client.is_model_ready(MODEL)
    version = httpx.get(f"{service.url}/readyz", timeout=10).json()["version"]
    assert client.is_model_ready(MODEL, version)
    assert not client.is_model_ready(MODEL, "1")  # a version not served
    assert not client.is_model_ready("nope")
    server = client.get_server_metadata()
    assert server["name"] == "hydrarec"
    assert "binary_tensor_data" in server["extensions"]
    meta = client.get_model_metadata(MODEL)
    assert [i["name"] for i in meta["inputs"]] == ["user_id", "history", "candidates"]
    assert {i["datatype"] for i in meta["inputs"]} == {"BYTES"}
    outputs = {o["name"]: o for o in meta["outputs"]}
    assert outputs["click"]["shape"] == [-1, -1]
    assert outputs["ranking"]["datatype"] == "INT64"
    assert json.loads(meta["parameters"]["classes_gender"]) == ["F", "M"]
    assert outputs["gender"]["shape"] == [-1, 2]
    assert meta["parameters"]["top_k"] == 10


@pytest.mark.parametrize("binary", [True, False], ids=["binary", "json"])
def test_infer_for_several_users_equals_predict(
    client: triton.InferenceServerClient, service: Service, binary: bool
) -> None:
    answer = client.infer(MODEL, tensors(ROWS, binary), request_id="req-7")
    assert answer.get_response()["id"] == "req-7"
    click, like, score = (answer.as_numpy(n) for n in ("click", "like", "score"))
    ranking, gender = answer.as_numpy("ranking"), answer.as_numpy("gender")
    assert click.shape == score.shape == ranking.shape == (3, 4)
    assert gender.shape == (3, 2)
    for b, (user, history, candidates) in enumerate(ROWS):
        expected = predict(service, user, history, candidates)
        by_id = {item["item_id"]: item for item in expected["items"]}
        for j, item_id in enumerate(candidates):
            assert click[b, j] == pytest.approx(by_id[item_id]["click"], abs=1e-6)
            assert like[b, j] == pytest.approx(by_id[item_id]["like"], abs=1e-6)
            assert score[b, j] == pytest.approx(by_id[item_id]["score"], abs=1e-6)
        ranked = [candidates[j] for j in ranking[b] if j >= 0]
        assert ranked == [item["item_id"] for item in expected["items"]][:10]
        assert (ranking[b, len(candidates) :] == -1).all()
        assert (click[b, len(candidates) :] == 0).all()  # padding
        assert gender[b].tolist() == pytest.approx(
            list(expected["user"]["gender"].values()), abs=1e-6
        )


def test_outputs_are_selected_and_top_k_and_weights_are_parameters(
    client: triton.InferenceServerClient, service: Service
) -> None:
    wanted = [triton.InferRequestedOutput("ranking"), triton.InferRequestedOutput("like")]
    answer = client.infer(
        MODEL,
        tensors(ROWS[:1], True),
        outputs=wanted,
        parameters={"top_k": 2, "weight_like": 1.0},
    )
    assert [o["name"] for o in answer.get_response()["outputs"]] == ["ranking", "like"]
    assert answer.as_numpy("click") is None
    expected = predict(service, *ROWS[0][:2], ROWS[0][2])
    by_like = sorted(
        ROWS[0][2], key=lambda i: -next(x["like"] for x in expected["items"] if x["item_id"] == i)
    )
    ranking = answer.as_numpy("ranking")[0]
    assert [ROWS[0][2][j] for j in ranking if j >= 0] == by_like[:2]
    assert (ranking[2:] == -1).all()


@pytest.mark.parametrize("binary", [True, False])
def test_without_candidates_every_row_recommends_as_predict_does(
    client: triton.InferenceServerClient, service: Service, binary: bool
) -> None:
    rows = [(user, history, []) for user, history, _ in ROWS]
    inputs = [t for t in tensors(rows, binary) if t.name() != "candidates"]
    wanted = [
        triton.InferRequestedOutput(n, binary_data=binary)
        for n in ("items", "click", "score", "ranking", "retrieved", "gender")
    ]
    answer = client.infer(MODEL, inputs, outputs=wanted, parameters={"top_k": 4})

    items = answer.as_numpy("items")
    assert items.shape == (3, 4)
    assert answer.as_numpy("retrieved").tolist() == [100, 100, 100]
    for b, (user, history, _) in enumerate(rows):
        body = {"user_id": user, "history": history, "top_k": 4}
        expected = httpx.post(f"{service.url}/predict", json=body, timeout=10).json()
        ids = [i.decode() if isinstance(i, bytes) else i for i in items[b].tolist()]
        assert ids == [i["item_id"] for i in expected["items"]]
        assert not set(ids) & set(history)
        for task in ("click", "score"):
            got = answer.as_numpy(task)[b]
            assert got == pytest.approx([i[task] for i in expected["items"]], abs=1e-6)
        assert answer.as_numpy("ranking")[b].tolist() == [0, 1, 2, 3]
        gender = answer.as_numpy("gender")[b]
        assert gender == pytest.approx(list(expected["user"]["gender"].values()), abs=1e-6)


def test_errors_are_the_protocols(client: triton.InferenceServerClient, service: Service) -> None:
    with pytest.raises(InferenceServerException, match="no model 'nope'") as raised:
        client.infer("nope", tensors(ROWS, True))
    assert raised.value.status() == "404"
    with pytest.raises(InferenceServerException, match="version 1 is not served"):
        client.infer(MODEL, tensors(ROWS, True), model_version="1")
    cases = {
        "missing user_id": (
            {"inputs": [{"name": "history", "shape": [1, 1], "datatype": "BYTES", "data": ["1"]}]},
            "input 'user_id' is missing",
        ),
        "wrong datatype": (
            {"inputs": [{"name": "user_id", "shape": [1], "datatype": "INT64", "data": [1]}]},
            "must be BYTES",
        ),
        "shape and data disagree": (
            {
                "inputs": [
                    {"name": "user_id", "shape": [2], "datatype": "BYTES", "data": ["196"]},
                    {
                        "name": "candidates",
                        "shape": [2, 1],
                        "datatype": "BYTES",
                        "data": ["1", "2"],
                    },
                ]
            },
            "holds 2 elements, 1 were sent",
        ),
        "a row without candidates": (
            {
                "inputs": [
                    {"name": "user_id", "shape": [1], "datatype": "BYTES", "data": ["196"]},
                    {"name": "candidates", "shape": [1, 1], "datatype": "BYTES", "data": [""]},
                ]
            },
            "row 0: candidates",
        ),
        "too many candidates": (
            {
                "inputs": [
                    {"name": "user_id", "shape": [1], "datatype": "BYTES", "data": ["196"]},
                    {
                        "name": "candidates",
                        "shape": [1, 60],
                        "datatype": "BYTES",
                        "data": [str(i) for i in range(60)],
                    },
                ]
            },
            "at most 50 candidates",
        ),
        "unknown output": (
            {
                "inputs": [
                    {"name": "user_id", "shape": [1], "datatype": "BYTES", "data": ["196"]},
                    {"name": "candidates", "shape": [1, 1], "datatype": "BYTES", "data": ["1"]},
                ],
                "outputs": [{"name": "clicks"}],
            },
            "unknown output(s) ['clicks']",
        ),
        "bad weight": (
            {
                "inputs": [
                    {"name": "user_id", "shape": [1], "datatype": "BYTES", "data": ["196"]},
                    {"name": "candidates", "shape": [1, 1], "datatype": "BYTES", "data": ["1"]},
                ],
                "parameters": {"weight_gender": 1.0},
            },
            "not an item task",
        ),
        "explain asked": (
            {
                "inputs": [
                    {"name": "user_id", "shape": [1], "datatype": "BYTES", "data": ["196"]},
                    {"name": "candidates", "shape": [1, 1], "datatype": "BYTES", "data": ["1"]},
                ],
                "parameters": {"explain": True},
            },
            "POST /predict",
        ),
        "not JSON": (b"{", "body"),
    }
    failures_before = total(service.url, "hydrarec_predict_failures", reason="invalid_input")
    for case, (body, said) in cases.items():
        content = body if isinstance(body, bytes) else json.dumps(body).encode()
        answer = httpx.post(f"{service.url}/v2/models/{MODEL}/infer", content=content, timeout=10)
        assert answer.status_code == 400, (case, answer.text)
        assert set(answer.json()) == {"error"}, case
        assert said in answer.json()["error"], (case, answer.json())
    failures = total(service.url, "hydrarec_predict_failures", reason="invalid_input")
    assert failures - failures_before == len(cases)  # counted like /predict's
    requests = total(service.url, "hydrarec_http_requests", handler="/v2/models/{name}/infer")
    assert requests >= len(cases)  # the protocol's own route label


def test_the_api_key_and_the_body_limit_hold_for_the_protocol(tmp_path: Path) -> None:
    with running_service(
        tmp_path,
        HYDRAREC_WORKERS="1",
        HYDRAREC_API_KEY="s3cret-key-0123456",
        HYDRAREC_MAX_BODY_BYTES="2048",
    ) as guarded:
        url = f"{guarded.url}/v2/models/{MODEL}"
        assert httpx.get(url, timeout=10).status_code == 401
        assert (
            httpx.get(url, headers={"X-API-Key": "s3cret-key-0123456"}, timeout=10).status_code
            == 200
        )
        assert httpx.get(f"{guarded.url}/v2/health/ready", timeout=10).status_code == 200
        client = triton.InferenceServerClient(guarded.url.removeprefix("http://"), verbose=False)
        try:
            answer = client.infer(
                MODEL, tensors(ROWS, True), headers={"X-API-Key": "s3cret-key-0123456"}
            )
            assert answer.as_numpy("click").shape == (3, 4)
            big = [("196", [], [str(i) for i in range(400)])]
            with pytest.raises(InferenceServerException) as raised:
                client.infer(MODEL, tensors(big, True), headers={"X-API-Key": "s3cret-key-0123456"})
            assert raised.value.status() == "413"
        finally:
            client.close()


def test_with_dynamic_batching_the_rows_share_runs_and_answer_the_same(
    client: triton.InferenceServerClient, tmp_path: Path
) -> None:
    alone = client.infer(MODEL, tensors(ROWS, True))
    with running_service(
        tmp_path, HYDRAREC_WORKERS="1", HYDRAREC_BATCH_MAX_CANDIDATES="2000"
    ) as batched:
        other = triton.InferenceServerClient(batched.url.removeprefix("http://"))
        try:
            together = other.infer(MODEL, tensors(ROWS, True))
        finally:
            other.close()
        text = httpx.get(f"{batched.url}/metrics", timeout=10).text
        batched_rows = sum(
            sample.value
            for family in text_string_to_metric_families(text)
            for sample in family.samples
            if sample.name == "hydrarec_batch_requests_sum"
        )
    for name in ("click", "like", "score", "gender", "occupation"):
        np.testing.assert_allclose(together.as_numpy(name), alone.as_numpy(name), atol=1e-6)
    np.testing.assert_array_equal(together.as_numpy("ranking"), alone.as_numpy("ranking"))
    assert batched_rows == len(ROWS)  # every row went through the batcher
