"""Dependencies injected into the handlers: settings, metrics, the ready model, and the checks
every guarded route shares (API key, JSON body).

All are `async def` although none does I/O: FastAPI runs a plain `def` dependency in its thread
pool, one thread hop per dependency per request, which costs more than the dependency's work."""

from __future__ import annotations

import hmac
from typing import Annotated

from fastapi import Depends, Request, Security
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer
from fastapi.security.utils import get_authorization_scheme_param

from service.config import Settings
from service.errors import AdminDisabled, NotJson, NotReady, Unauthorized
from service.lifecycle import ModelHolder
from service.memory import Memory
from service.metrics import Metrics
from service.middleware import MODEL
from service.predictor import Predictor


async def app_settings(request: Request) -> Settings:
    """The settings the app was created with."""
    settings: Settings = request.app.state.settings
    return settings


async def get_metrics(request: Request) -> Metrics:
    """The app's metric objects."""
    metrics: Metrics = request.app.state.metrics
    return metrics


async def get_predictor(request: Request) -> Predictor:
    """The loaded, warmed-up model.

    Raises:
        NotReady: no model is ready yet (503 with Retry-After).
    """
    predictor: Predictor | None = request.app.state.models.current
    if predictor is None:
        settings: Settings = request.app.state.settings
        raise NotReady("the model is not loaded yet", settings.retry_after_seconds)
    request.scope[MODEL] = predictor.ref  # the request's metrics name the model that answered
    return predictor


# Declared as security schemes, so the OpenAPI document (and Swagger UI's Authorize) has them.
API_KEY = APIKeyHeader(name="X-API-Key", auto_error=False, description="HYDRAREC_API_KEY")
BEARER = HTTPBearer(auto_error=False, description="HYDRAREC_API_KEY as a bearer token")


async def require_api_key(
    request: Request,
    key: Annotated[str | None, Security(API_KEY)] = None,
    bearer: Annotated[HTTPAuthorizationCredentials | None, Security(BEARER)] = None,
) -> None:
    """The API key check as a dependency (see `check_api_key`)."""
    check_api_key(await app_settings(request), key, bearer.credentials if bearer else None)


def check_api_key(settings: Settings, key: str | None, bearer: str | None) -> None:
    """With HYDRAREC_API_KEY set, the request must carry it as `X-API-Key: <key>` or
    `Authorization: Bearer <key>` (compared in constant time; never logged).

    Raises:
        Unauthorized: the key is configured and missing or wrong (401).
    """
    expected = settings.api_key
    if expected is None:
        return
    given = key or (bearer.strip() if bearer is not None else "")
    if not hmac.compare_digest(given.encode(), expected.get_secret_value().encode()):
        raise Unauthorized("an API key is required: send X-API-Key or Authorization: Bearer")


def bearer_credentials(authorization: str | None) -> str | None:
    """The token of an `Authorization: Bearer <token>` header, read as FastAPI's HTTPBearer
    reads it (any case of `Bearer`, the token stripped); None for no or another scheme."""
    scheme, credentials = get_authorization_scheme_param(authorization)
    if not (scheme and credentials) or scheme.lower() != "bearer":
        return None
    return credentials


async def require_admin(request: Request, _key: Annotated[None, Depends(require_api_key)]) -> None:
    """/admin/* exists only with HYDRAREC_API_KEY set, and always needs the key (checked by
    require_api_key first: with a key configured, a request without it gets 401).

    Raises:
        AdminDisabled: no key is configured (404).
    """
    if (await app_settings(request)).api_key is None:
        raise AdminDisabled("admin endpoints are disabled: set HYDRAREC_API_KEY to enable them")


async def get_models(request: Request) -> ModelHolder:
    """The holder of the served model (for reloads)."""
    models: ModelHolder = request.app.state.models
    return models


async def get_memory(request: Request) -> Memory:
    """The worker's event store (opened when the app started)."""
    memory: Memory = request.app.state.memory
    return memory


async def require_json(request: Request) -> None:
    """The JSON content-type check as a dependency (see `check_json`)."""
    check_json(request.headers.get("content-type", ""))


def check_json(declared: str) -> None:
    """Refuse bodies not declared as JSON, rather than guessing what they are.

    Raises:
        NotJson: the Content-Type is missing or not application/json (415).
    """
    media_type = declared.split(";", 1)[0].strip().lower()
    if media_type != "application/json" and not media_type.endswith("+json"):
        raise NotJson(
            f"body: send JSON with Content-Type: application/json (got {declared or 'none'!r})"
        )


async def read_body(request: Request) -> bytes:
    """The raw body (already bounded by the BodyLimit middleware)."""
    return await request.body()


BodyDep = Annotated[bytes, Depends(read_body)]
SettingsDep = Annotated[Settings, Depends(app_settings)]
MetricsDep = Annotated[Metrics, Depends(get_metrics)]
PredictorDep = Annotated[Predictor, Depends(get_predictor)]
ModelsDep = Annotated[ModelHolder, Depends(get_models)]
MemoryDep = Annotated[Memory, Depends(get_memory)]
