"""The HTTP API (DESIGN.md "API"): thin handlers over the predictor.

POST /predict is served by service.predict_endpoint ahead of the routing (its route here is for
the OpenAPI document); /metrics, which reads the workers' files, is a plain `def` that FastAPI
runs in its thread pool.
"""

from __future__ import annotations

from fastapi import APIRouter, Depends, Response

from service.artifact import ArtifactError
from service.deps import (
    BodyDep,
    MemoryDep,
    MetricsDep,
    ModelsDep,
    PredictorDep,
    SettingsDep,
    require_admin,
    require_api_key,
    require_json,
)
from service.errors import ReloadFailed
from service.memory import store_events
from service.predict_endpoint import PREDICT_PATH, predict
from service.schemas import (
    CatalogueSummary,
    ErrorBody,
    EventsRequest,
    EventsResponse,
    FitSummary,
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
        (
            503,
            "`not_ready`, `overloaded`, or `store_unavailable` (a request without `history` "
            "while the event store is down); see Retry-After",
        ),
    )
}
ERRORS_MODELS: dict[int | str, dict[str, object]] = {
    401: ERRORS[401],
    503: {"model": ErrorBody, "description": "`not_ready` or `overloaded` (see Retry-After)"},
}


# The body is decoded by hand (one pydantic JSON pass, timed as the `decode` stage) and the
# answer serialised straight to bytes (`encode_response`), so both are documented here.
PREDICT_BODY = {
    "required": True,
    "content": {"application/json": {"schema": inline_schema(PredictRequest)}},
}


async def predict_route(
    body: BodyDep,
    predictor: PredictorDep,
    settings: SettingsDep,
    metrics: MetricsDep,
    memory: MemoryDep,
) -> Response:
    """Every task's output for one user: profile class probabilities and the ranked candidates.

    POST requests are answered by service.predict_endpoint before routing, with the same checks
    in the same order; this route declares them for the OpenAPI document and answers the same
    (tested) when called through FastAPI's routing."""
    payload = await predict(body, predictor, settings, metrics, memory)
    return Response(payload, media_type="application/json")


router.add_api_route(
    PREDICT_PATH,
    predict_route,
    name="predict",  # the operationId clients generate code from: predict_predict_post
    methods=["POST"],
    description="Every task's output for one user: profile class probabilities and the ranked "
    "candidates.",
    responses=ERRORS,
    response_model=PredictResponse,
    dependencies=[Depends(require_api_key), Depends(require_json)],
    openapi_extra={"requestBody": PREDICT_BODY},
)


EVENTS_PATH = "/events"
EVENTS_ERRORS: dict[int | str, dict[str, object]] = {
    s: ERRORS[s] for s in (401, 408, 413, 415, 422)
}
EVENTS_ERRORS[503] = {
    "model": ErrorBody,
    "description": "`store_unavailable`: nothing was stored; retry after Retry-After seconds",
}


@router.post(
    EVENTS_PATH,
    responses=EVENTS_ERRORS,
    response_model=EventsResponse,
    dependencies=[Depends(require_api_key), Depends(require_json)],
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": inline_schema(EventsRequest)}},
        }
    },
)
def post_events(body: BodyDep, settings: SettingsDep, memory: MemoryDep) -> EventsResponse:
    """Store a batch of interactions (feedback) for the users' history: all of it, or none.

    A plain `def`: the store's calls block, so FastAPI runs it in its thread pool."""
    return store_events(body, settings.max_events, memory)


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
        fit=(
            None
            if manifest.fit is None
            else FitSummary(**manifest.fit.model_dump(), metrics_are=manifest.fit.metrics_are)
        ),
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
