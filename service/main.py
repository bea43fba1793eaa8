"""The app factory: `create_app(settings)` wires routes, errors, middleware and the lifespan.

The lifespan loads, verifies and warms up the model before the server accepts a request; if
that fails, it logs exactly what is wrong and start-up fails (uvicorn exits non-zero), so a
server never runs half-started.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException
from starlette.routing import Route
from starlette.types import Scope

from eventstore import StoreError, open_store
from service import v2
from service.artifact import ArtifactError
from service.config import Settings, get_settings
from service.docs import add_docs
from service.errors import ServiceError, failure_answer
from service.lifecycle import ModelHolder
from service.memory import Memory
from service.metrics import NO_MODEL, Metrics
from service.middleware import AdmissionLimit, BodyLimit, HttpMetrics
from service.predict_endpoint import PREDICT_PATH, PredictEndpoint
from service.routes import EVENTS_PATH, router
from service.schemas import ErrorBody

logger = logging.getLogger("hydrarec")


def is_inference(path: str) -> bool:
    """/predict and the Open Inference Protocol's infer: admission-limited, failures counted."""
    return path == PREDICT_PATH or (path.startswith("/v2/models/") and path.endswith("/infer"))


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    """Open the event store, load, verify and warm up the model; the app is ready only after
    that succeeded."""
    settings: Settings = app.state.settings
    models: ModelHolder = app.state.models
    try:
        store = open_store(settings.store_url)
    except StoreError as e:
        logger.error("cannot open the event store (HYDRAREC_STORE_URL): %s", e)
        raise
    app.state.memory = Memory(store, app.state.metrics, settings.retry_after_seconds)
    try:
        await models.start()
    except ArtifactError as e:
        logger.error("cannot serve model %r: %s", settings.model_name, e)
        store.close()
        raise
    poller = None
    if settings.model_poll_seconds and settings.model_version is None:
        poller = asyncio.create_task(models.poll(settings.model_poll_seconds))
    yield
    if poller is not None:
        poller.cancel()
    models.current = None
    store.close()


def create_app(settings: Settings | None = None) -> FastAPI:
    """The hydrarec app; settings default to the environment (`HYDRAREC_*`)."""
    settings = settings or get_settings()
    metrics = Metrics()
    app = FastAPI(
        title="hydrarec",
        summary="Every task of a multi-task recommender from one POST /predict.",
        version="0.1.0",
        lifespan=lifespan,
        docs_url=None,  # served offline by service.docs
        redoc_url=None,
        # FastAPI's own OpenTelemetry layer asks for configured providers on every request
        # (environment lookups, ~1% of a /predict); the service's telemetry is Prometheus.
        telemetry={"tracing": False, "metrics": False, "logs": False},
    )
    app.state.settings = settings
    app.state.metrics = metrics
    app.state.models = ModelHolder(settings, metrics)
    app.include_router(router)
    app.include_router(v2.router)
    add_docs(app)

    def count_failure(scope: Scope, reason: str) -> None:
        if is_inference(scope["path"]):
            metrics.failures.labels(reason).inc()
        elif scope["path"] == EVENTS_PATH:
            metrics.event_batches_refused.labels(reason).inc()

    async def on_failure(request: Request, exc: Exception) -> JSONResponse:
        error = failure_answer(request.scope["path"], exc)
        count_failure(request.scope, error.reason)
        return _error(error.status, error.body(), error.headers)

    async def on_http_error(_: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, HTTPException)
        reason = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        return _error(exc.status_code, ErrorBody(error=reason, message=str(exc.detail)))

    async def on_protocol_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, v2.V2Error)
        count_failure(request.scope, exc.reason)
        return JSONResponse({"error": exc.message}, status_code=exc.status, headers=exc.headers)

    app.add_exception_handler(ServiceError, on_failure)
    app.add_exception_handler(v2.V2Error, on_protocol_error)
    app.add_exception_handler(HTTPException, on_http_error)
    app.add_exception_handler(Exception, on_failure)
    # The last added is the outermost: metrics, then the whole body, then an admission slot,
    # then POST /predict is answered without the framework's layers.
    models: ModelHolder = app.state.models
    app.add_middleware(
        PredictEndpoint,
        models=models,
        settings=settings,
        metrics=metrics,
        memory=lambda: app.state.memory,
        on_failure=count_failure,
    )
    app.add_middleware(
        AdmissionLimit,
        max_in_flight=settings.max_in_flight,
        guarded=is_inference,
        retry_after=settings.retry_after_seconds,
        on_reject=lambda scope: count_failure(scope, "overloaded"),
    )
    app.add_middleware(
        BodyLimit,
        max_bytes=settings.max_body_bytes,
        timeout_s=settings.body_timeout_seconds,
        on_reject=count_failure,
    )
    # FastAPI wraps included routers; the templates are those of the router and the docs.
    routes = [r for r in [*app.routes, *router.routes, *v2.router.routes] if isinstance(r, Route)]

    def serving() -> tuple[str, str]:
        current = models.current
        return NO_MODEL if current is None else (current.ref["name"], current.ref["version"])

    app.add_middleware(HttpMetrics, metrics=metrics, routes=routes, serving=serving)
    for route in routes:
        for method in sorted(route.methods or ()):
            metrics.start_handler(route.path, method)
    return app


def _error(status: int, body: ErrorBody, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse(body.model_dump(mode="json"), status_code=status, headers=headers)
