"""The HTTP API (DESIGN.md "API"): thin handlers over the predictor.

/predict runs on the event loop (see its docstring), through `PredictRoute`; /metrics, which
reads the workers' files, is a plain `def` that FastAPI runs in its thread pool.
"""

from __future__ import annotations

import orjson
from fastapi import APIRouter, Depends, Request, Response
from fastapi.routing import APIRoute
from starlette.types import Receive, Scope, Send

from service.artifact import ArtifactError
from service.decoding import decode_request
from service.deps import (
    API_KEY,
    BEARER,
    BodyDep,
    MetricsDep,
    ModelsDep,
    PredictorDep,
    SettingsDep,
    app_settings,
    get_metrics,
    get_predictor,
    read_body,
    require_admin,
    require_api_key,
    require_json,
)
from service.errors import ReloadFailed
from service.schemas import (
    CatalogueSummary,
    ErrorBody,
    ModelsResponse,
    ModelSummary,
    PredictRequest,
    PredictResponse,
    RejectedVersion,
    TaskSummary,
    inline_schema,
)

router = APIRouter()
ERRORS: dict[int | str, dict[str, object]] = {
    status: {"model": ErrorBody, "description": text}
    for status, text in (
        (401, "`unauthorized`: HYDRAREC_API_KEY is set and the request does not carry it"),
        (408, "`timeout`: the body was not complete within HYDRAREC_BODY_TIMEOUT_SECONDS"),
        (413, "`too_large`: body larger than HYDRAREC_MAX_BODY_BYTES"),
        (415, "`invalid_input`: body not sent as application/json"),
        (422, "`invalid_input`: invalid body; the message names the field"),
        (500, "`internal`: the model produced a non-finite output (logged)"),
        (503, "`not_ready` or `overloaded` (see Retry-After)"),
    )
}
ERRORS_MODELS: dict[int | str, dict[str, object]] = {s: ERRORS[s] for s in (401, 503)}


# The body is decoded by hand (one pydantic JSON pass, timed as the `decode` stage) and the
# answer serialised straight to bytes (`encode_response`), so both are documented here.
PREDICT_BODY = {
    "required": True,
    "content": {"application/json": {"schema": inline_schema(PredictRequest)}},
}


JSON_TYPE = (b"content-type", b"application/json")


class PredictRoute(APIRoute):
    """/predict served as plain ASGI: no per-request dependency solving (a tenth of a worker's
    samples under load), no Request wrapper stack and no Response object (32 µs a request;
    README, Performance). The route declares its dependencies as usual, so the OpenAPI document
    (security schemes, body, errors) is FastAPI's own; `handle` calls the same functions
    itself, in FastAPI's order (the route's, then the endpoint's parameters). What they raise
    reaches the app's exception handlers as from any route."""

    async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["method"] not in (self.methods or ()):  # 405 with Allow, as from any route
            await super().handle(scope, receive, send)
            return
        request = Request(scope, receive, send)
        await require_api_key(request, await API_KEY(request), await BEARER(request))
        await require_json(request)
        payload: bytes = await self.endpoint(
            body=await read_body(request),
            predictor=await get_predictor(request),
            settings=await app_settings(request),
            metrics=await get_metrics(request),
        )
        length = (b"content-length", str(len(payload)).encode())
        await send({"type": "http.response.start", "status": 200, "headers": [JSON_TYPE, length]})
        await send({"type": "http.response.body", "body": payload})


async def predict(
    body: BodyDep, predictor: PredictorDep, settings: SettingsDep, metrics: MetricsDep
) -> bytes:
    """Every task's output for one user: profile class probabilities and the ranked candidates
    (the PredictResponse body, as JSON bytes).

    All of it runs on the event loop: with one core per worker there is nothing to overlap, and
    a thread hop per request cost more than the work around the model. With dynamic batching
    (service/batching.py) concurrent requests share one session.run, on the loop too."""
    with metrics.stage["decode"].time():
        request = decode_request(body, settings.max_candidates)
    if predictor.batcher is None:
        answer = predictor.predict(request, metrics)
    else:
        answer = await predictor.predict_batched(request, metrics)
    with metrics.stage["encode_response"].time():
        return orjson.dumps(answer)


router.add_api_route(
    "/predict",
    predict,
    methods=["POST"],
    responses=ERRORS,
    response_model=PredictResponse,
    dependencies=[Depends(require_api_key), Depends(require_json)],
    openapi_extra={"requestBody": PREDICT_BODY},
    route_class_override=PredictRoute,
)


@router.get("/healthz")
async def read_health() -> dict[str, str]:
    """Liveness: the process answers."""
    return {"status": "ok"}


@router.get("/readyz", responses={503: {"model": ErrorBody, "description": "not ready"}})
async def read_ready(predictor: PredictorDep) -> dict[str, str]:
    """Readiness: a model is loaded, verified and warmed up."""
    return {"status": "ready", "model": predictor.ref["name"], "version": predictor.ref["version"]}


@router.get(
    "/v1/models",
    responses=ERRORS_MODELS,
    dependencies=[Depends(require_api_key)],
)
async def read_models(predictor: PredictorDep, models: ModelsDep) -> ModelsResponse:
    """What is loaded: a summary of the manifest, and the versions that were rejected."""
    manifest = predictor.artifact.manifest
    summary = ModelSummary(
        name=manifest.name,
        version=str(manifest.version),
        created_at=manifest.created_at,
        history_length=manifest.history_length,
        tasks=[
            TaskSummary(name=t.name, level=t.level, kind=t.kind, classes=list(t.classes))
            for t in manifest.tasks
        ],
        ranking_weights=dict(manifest.ranking.weights),
        top_k=manifest.ranking.top_k,
        vocabulary_sizes={k: v.size for k, v in manifest.vocabularies.items()},
        catalogue=CatalogueSummary(
            items=manifest.vocabularies["item_id"].size,
            trained_ids=manifest.catalogue.n_trained,
            features={f.column: f.kind for f in manifest.catalogue.features},
        ),
        metrics=dict(manifest.metrics),
        rejected=[
            RejectedVersion(version=str(v), reason=r.reason)
            for v, r in sorted(models.rejected.items())
        ],
    )
    return ModelsResponse(models=[summary])


@router.get("/metrics", response_class=Response)
def read_metrics(metrics: MetricsDep) -> Response:
    """Prometheus text exposition format."""
    body, content_type = metrics.render()
    return Response(body, media_type=content_type)


@router.post(
    "/admin/reload",
    dependencies=[Depends(require_admin)],
    responses={
        401: {"model": ErrorBody, "description": "no or wrong API key"},
        404: {"model": ErrorBody, "description": "HYDRAREC_API_KEY is not set"},
        409: {"model": ErrorBody, "description": "the newest version cannot be served"},
    },
)
async def reload_model(models: ModelsDep) -> dict[str, object]:
    """Serve the highest model version now if it is newer (workers also poll on their own)."""
    try:
        result = await models.refresh()
    except ArtifactError as e:
        raise ReloadFailed(str(e)) from None
    return {"version": str(result.version), "reloaded": result.reloaded}
