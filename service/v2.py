"""The Open Inference Protocol (KServe v2 REST) beside /predict: the same model, verification,
limits, API key, batching and metrics, so Triton's own client (`tritonclient`) can call hydrarec.

The ragged /predict request becomes rectangular tensors (docs/serving.md):
`user_id` BYTES [B], `history` BYTES [B, H], `candidates` BYTES [B, N], an empty string being
padding; parameters `top_k` and `weight_<item task>`. Outputs: every task (item tasks FP32
[B, N] in candidate order, user tasks FP32 [B, K]), `score` FP32 [B, N] and `ranking` INT64
[B, N] (candidate positions, best first, -1 after the last ranked). Without the `candidates`
input each row recommends from the whole catalogue (recommend mode) and the item outputs are
[B, K] in ranked order: `items` BYTES (the item ids, "" after the last), the item tasks and
`score`, `ranking` (0..n-1, then -1) and `retrieved` INT64 [B]. Without the `history` input
every row's history is the user's history in the event store (as /predict without
`history`); the response's parameter `history_source` says which ("request" or "store"). Each
row is one /predict request underneath, so the numbers are /predict's.
"""

from __future__ import annotations

import asyncio
import functools
import json
from typing import Any

import numpy as np
from fastapi import APIRouter, Depends, Request, Response
from pydantic import BaseModel, Field, ValidationError

from service.deps import BodyDep, MemoryDep, MetricsDep, SettingsDep, require_api_key
from service.errors import InvalidInput, ServiceError
from service.memory import REQUEST, STORE, with_history
from service.metrics import Metrics
from service.middleware import MODEL
from service.predictor import Inferred, Predictor, Scored
from service.schemas import ErrorBody, PredictRequest, inline_schema
from service.v2_tensors import HEADER_LENGTH, Output, ProtocolError, V2Request, decode, encode


class V2ErrorBody(BaseModel):
    """The protocol's error answer."""

    error: str = Field(description="what is wrong")


def _documented(*statuses: int) -> dict[int | str, dict[str, Any]]:
    texts = {
        400: (V2ErrorBody, "a request the protocol or the model cannot take; `error` says why"),
        401: (ErrorBody, "HYDRAREC_API_KEY is set and the request does not carry it"),
        404: (V2ErrorBody, "another model, or a version that is not served"),
        413: (ErrorBody, "body larger than HYDRAREC_MAX_BODY_BYTES"),
        503: (V2ErrorBody, "not ready yet, or overloaded (see Retry-After)"),
    }
    return {s: {"model": texts[s][0], "description": texts[s][1]} for s in statuses}


router = APIRouter(prefix="/v2", tags=["Open Inference Protocol (KServe v2)"])
GUARDED = [Depends(require_api_key)]
META = _documented(401, 404, 503)
INFER = _documented(400, 401, 404, 413, 503)
# The body is read by hand (JSON, or JSON + binary tensors after Inference-Header-Content-Length)
INFER_BODY = {
    "required": True,
    "content": {
        "application/json": {"schema": inline_schema(V2Request)},
        "application/octet-stream": {"schema": {"type": "string", "format": "binary"}},
    },
}
EXTENSIONS = ["binary_tensor_data", "parameters"]
INPUTS = ("user_id", "history", "candidates")
RANKING_OUTPUTS = (("score", "FP32"), ("ranking", "INT64"))
RECOMMEND_OUTPUTS = (("items", "BYTES"), ("retrieved", "INT64"))  # recommend mode adds these


class V2Error(Exception):
    """An answer in the protocol's error shape, `{"error": message}`."""

    def __init__(self, status: int, message: str, reason: str, retry_after: int | None = None):
        super().__init__(message)
        self.status, self.message, self.reason = status, message, reason
        self.headers = {} if retry_after is None else {"Retry-After": str(retry_after)}


def ready(request: Request) -> Predictor:
    """The loaded, warmed-up model.

    Raises:
        V2Error: 503 (with Retry-After) while no model is ready.
    """
    predictor: Predictor | None = request.app.state.models.current
    if predictor is None:
        retry = request.app.state.settings.retry_after_seconds
        raise V2Error(503, "the model is not loaded yet", "not_ready", retry)
    return predictor


def served(request: Request, name: str, version: str | None = None) -> Predictor:
    """The ready model, if it is `name` (and `version`).

    Raises:
        V2Error: 503 not ready yet, 404 another model or a version not served.
    """
    predictor = ready(request)
    ref = predictor.ref
    if name != ref["name"]:
        raise V2Error(404, f"no model {name!r}; this server serves {ref['name']!r}", "not_found")
    if version not in (None, "", ref["version"]):
        raise V2Error(
            404, f"{name} version {version} is not served (serving {ref['version']})", "not_found"
        )
    request.scope[MODEL] = ref  # the request's metrics name the model that answered
    return predictor


@router.get("")
async def server_metadata() -> dict[str, Any]:
    """Server metadata: name, version, the protocol extensions supported."""
    return {"name": "hydrarec", "version": "0.1.0", "extensions": EXTENSIONS}


@router.get("/health/live")
async def server_live() -> dict[str, bool]:
    """Liveness: the process answers (as /healthz)."""
    return {"live": True}


@router.get("/health/ready", responses=_documented(503))
async def server_ready(request: Request) -> dict[str, bool]:
    """Readiness: the model is loaded, verified and warmed up (as /readyz)."""
    ready(request)
    return {"ready": True}


@router.get("/models/{name}", dependencies=GUARDED, responses=META)
@router.get("/models/{name}/versions/{version}", dependencies=GUARDED, responses=META)
async def model_metadata(request: Request, name: str, version: str | None = None) -> dict[str, Any]:
    """Inputs, outputs (-1: a variable dimension), class labels and ranking defaults."""
    return metadata(served(request, name, version))


@router.get("/models/{name}/ready", dependencies=GUARDED, responses=META)
@router.get("/models/{name}/versions/{version}/ready", dependencies=GUARDED, responses=META)
async def model_ready(request: Request, name: str, version: str | None = None) -> dict[str, Any]:
    """Whether this model (version) is ready to infer."""
    served(request, name, version)
    return {"name": name, "ready": True}


@router.post(
    "/models/{name}/infer",
    dependencies=GUARDED,
    responses=INFER,
    openapi_extra={"requestBody": INFER_BODY},
)
@router.post(
    "/models/{name}/versions/{version}/infer",
    dependencies=GUARDED,
    responses=INFER,
    openapi_extra={"requestBody": INFER_BODY},
)
async def infer(
    request: Request,
    body: BodyDep,
    settings: SettingsDep,
    metrics: MetricsDep,
    memory: MemoryDep,
    name: str,
    version: str | None = None,
) -> Response:
    """Every task for B users and their candidates; see the module docstring for the tensors."""
    predictor = served(request, name, version)
    with metrics.stage["decode"].time():
        try:
            decoded = decode(body, request.headers.get(HEADER_LENGTH))
            rows, columns = _rows(
                decoded.inputs, decoded.header.parameters, settings.max_candidates
            )
            recommend = "candidates" not in decoded.inputs
            wanted = _wanted(predictor, decoded.header.outputs, recommend)
        except ProtocolError as e:
            raise V2Error(400, str(e), "invalid_input") from None
    try:
        window = predictor.artifact.manifest.history_length
        # every row's read in flight at once: on Redis, pipelined on one connection
        resolved = await asyncio.gather(*(with_history(r, memory, window) for r in rows))
        rows = [request for request, _ in resolved]
        if recommend:
            tensors = _recommended(predictor, [predictor.recommend(r, metrics) for r in rows])
        else:
            if predictor.batcher is None:
                inferred = [predictor.infer(r, metrics) for r in rows]
            else:
                inferred = await asyncio.gather(
                    *(predictor.infer_batched(r, metrics) for r in rows)
                )
            width = decoded.inputs["candidates"].shape[1]
            tensors = _tensors(predictor, inferred, columns, width, metrics)
    except InvalidInput as e:
        raise V2Error(400, e.message, "invalid_input") from None
    except ServiceError as e:
        retry = e.headers.get("Retry-After")
        raise V2Error(
            e.status, e.message, e.reason, None if retry is None else int(retry)
        ) from None
    with metrics.stage["encode_response"].time():
        header: dict[str, Any] = {"model_name": name, "model_version": predictor.ref["version"]}
        if decoded.header.id is not None:
            header["id"] = decoded.header.id
        source = REQUEST if "history" in decoded.inputs else STORE  # one for all rows
        header["parameters"] = {"history_source": source}
        outputs = [Output(n, t, tensors[n], decoded.binary(n)) for n, t in wanted]
        content, headers = encode(header, outputs)
    return Response(content, headers=headers)


def metadata(predictor: Predictor) -> dict[str, Any]:
    """The model metadata of the protocol, with hydrarec's parameters: `classes_<task>` (the
    class labels of a user task, a JSON list), `top_k` and `weight_<task>` (the defaults), and
    `recommend` (whether a request may leave `candidates` out)."""
    manifest = predictor.artifact.manifest
    outputs = [
        {
            "name": t.name,
            "datatype": "FP32",
            "shape": [-1, -1] if t.level == "item" else [-1, len(t.classes)],
        }
        for t in manifest.tasks
    ] + [{"name": n, "datatype": d, "shape": [-1, -1]} for n, d in RANKING_OUTPUTS]
    parameters: dict[str, Any] = {"top_k": manifest.ranking.top_k}
    parameters |= {f"weight_{k}": v for k, v in manifest.ranking.weights.items()}
    parameters |= {f"classes_{k}": json.dumps(list(v)) for k, v in predictor.user_classes.items()}
    parameters["recommend"] = predictor.retriever is not None  # `candidates` may be left out
    return {
        "name": manifest.name,
        "versions": [str(manifest.version)],
        "platform": "onnxruntime_onnx",
        "inputs": [
            {"name": "user_id", "datatype": "BYTES", "shape": [-1]},
            {"name": "history", "datatype": "BYTES", "shape": [-1, -1]},
            {"name": "candidates", "datatype": "BYTES", "shape": [-1, -1]},
        ],
        "outputs": outputs,
        "parameters": parameters,
    }


def _rows(
    inputs: dict[str, np.ndarray], parameters: dict[str, Any], max_candidates: int
) -> tuple[list[PredictRequest], list[np.ndarray]]:
    """One /predict request per row, and each row's candidate columns (padding left out);
    without the `candidates` input, recommend-mode requests."""
    unknown = set(inputs) - set(INPUTS)
    if unknown:
        raise ProtocolError(f"unknown input(s) {sorted(unknown)}; the inputs are {list(INPUTS)}")
    if "user_id" not in inputs:
        raise ProtocolError("input 'user_id' is missing")
    if "explain" in parameters:  # its lists per item and task are not tensors
        raise ProtocolError(
            "parameter 'explain': explanations are answered by POST /predict "
            '("explain": true), not by the inference protocol'
        )
    users = inputs["user_id"]
    n_rows = len(users)
    recommend = "candidates" not in inputs
    candidates = inputs.get("candidates", np.empty((n_rows, 0), dtype=object))
    stored = "history" not in inputs  # each row's history from the store
    history = inputs.get("history", np.empty((n_rows, 0), dtype=object))
    if users.ndim != 1:
        raise ProtocolError(f"input 'user_id' must be [B], got shape {list(users.shape)}")
    for name, array in (("history", history), ("candidates", candidates)):
        if array.ndim != 2 or array.shape[0] != n_rows:
            raise ProtocolError(
                f"input {name!r} must be [B, *] with B = {n_rows}, got shape {list(array.shape)}"
            )
    total = int((candidates != "").sum())
    if total > max_candidates:
        raise ProtocolError(
            f"at most {max_candidates} candidates per request over all rows "
            f"(HYDRAREC_MAX_CANDIDATES), got {total}"
        )
    top_k = parameters.get("top_k")
    weights = {
        k.removeprefix("weight_"): v for k, v in parameters.items() if k.startswith("weight_")
    }
    rows, columns = [], []
    for b in range(n_rows):
        kept = np.flatnonzero(candidates[b] != "")
        raw = {
            "user_id": users[b],
            "history": None if stored else [h for h in history[b].tolist() if h != ""],
            "candidates": None if recommend else candidates[b][kept].tolist(),
            "top_k": top_k,
            "weights": weights or None,
        }
        try:
            rows.append(PredictRequest.model_validate(raw))
        except ValidationError as e:  # the first field, as /predict's 422 names it
            first = e.errors(include_url=False, include_input=False)[0]
            where = ".".join(str(p) for p in first["loc"])
            raise ProtocolError(f"row {b}: {where}: {first['msg']}") from None
        columns.append(kept)
    return rows, columns


def _wanted(predictor: Predictor, requested: Any, recommend: bool) -> list[tuple[str, str]]:
    """(name, datatype) of the outputs to send: those the request names, or all of them."""
    every = [(t.name, "FP32") for t in predictor.artifact.manifest.tasks] + list(RANKING_OUTPUTS)
    if recommend:
        every = list(RECOMMEND_OUTPUTS[:1]) + every + list(RECOMMEND_OUTPUTS[1:])
    if not requested:
        return every
    known = dict(every)
    names = [o.name for o in requested]
    missing = [n for n in names if n not in known]
    if missing:
        raise ProtocolError(f"unknown output(s) {missing}; the outputs are {list(known)}")
    return [(n, known[n]) for n in names]


def _tensors(
    predictor: Predictor,
    inferred: list[Inferred],
    columns: list[np.ndarray],
    width: int,
    metrics: Metrics,
) -> dict[str, np.ndarray]:
    """Every output tensor, B rows of `width` candidate positions; padded positions 0 (floats)
    and -1 (ranking)."""
    n_rows = len(inferred)
    out: dict[str, np.ndarray] = {
        t: np.zeros((n_rows, width), dtype=np.float32) for t in predictor.item_tasks
    }
    out |= {
        t: np.zeros((n_rows, len(c)), dtype=np.float32) for t, c in predictor.user_classes.items()
    }
    out["score"] = np.zeros((n_rows, width), dtype=np.float32)
    out["ranking"] = np.full((n_rows, width), -1, dtype=np.int64)

    for b, row in enumerate(inferred):
        predictor.rank(row, metrics, functools.partial(_fill, out, b, columns[b], predictor))
    return out


def _recommended(predictor: Predictor, answers: list[dict[str, Any]]) -> dict[str, np.ndarray]:
    """Every output tensor of recommend-mode rows (their /predict bodies), B rows of as many
    positions as the longest answer: items in ranked order, padded with "", 0 and -1."""
    width = max((len(a["items"]) for a in answers), default=0)
    n_rows = len(answers)
    out: dict[str, np.ndarray] = {
        "items": np.full((n_rows, width), "", dtype=object),
        "score": np.zeros((n_rows, width), dtype=np.float32),
        "ranking": np.full((n_rows, width), -1, dtype=np.int64),
        "retrieved": np.array([a["retrieved"] for a in answers], dtype=np.int64),
    }
    out |= {t: np.zeros((n_rows, width), dtype=np.float32) for t in predictor.item_tasks}
    out |= {
        t: np.zeros((n_rows, len(c)), dtype=np.float32) for t, c in predictor.user_classes.items()
    }
    for b, answer in enumerate(answers):
        n = len(answer["items"])
        out["ranking"][b, :n] = np.arange(n)
        for key in ("item_id", "score", *predictor.item_tasks):
            values = [item[key] for item in answer["items"]]
            out["items" if key == "item_id" else key][b, :n] = values
        for task, classes in predictor.user_classes.items():
            out[task][b] = [answer["user"][task][c] for c in classes]
    return out


def _fill(
    out: dict[str, np.ndarray], b: int, at: np.ndarray, predictor: Predictor, scored: Scored
) -> None:
    """Row `b` of every output tensor from one scored request; `at`: its candidate columns."""
    outputs = scored.inferred.outputs
    for t in predictor.item_tasks:
        out[t][b, at] = outputs[t]
    for t in predictor.user_classes:
        out[t][b] = outputs[t][0]
    out["score"][b, at] = scored.scores
    out["ranking"][b, : len(scored.order)] = at[scored.order]
