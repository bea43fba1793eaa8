"""Errors the API answers with (DESIGN.md "API"): raised by name, rendered as an ErrorBody."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from service.schemas import ErrorBody, FieldError

logger = logging.getLogger("hydrarec")


class ServiceError(Exception):
    """An answer other than 200: its HTTP status, failure reason and message."""

    status = 500
    reason = "internal"
    headers: dict[str, str] = {}

    def __init__(self, message: str, fields: list[FieldError] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.fields = fields or []

    def body(self) -> ErrorBody:
        """The JSON body of the answer."""
        return ErrorBody(error=self.reason, message=self.message, fields=self.fields)


class InvalidInput(ServiceError):
    """The body does not follow the request schema or the service's limits (422)."""

    status = 422
    reason = "invalid_input"

    @classmethod
    def at(cls, field: str, message: str) -> InvalidInput:
        """One problem with one field."""
        return cls(f"{field}: {message}", [FieldError(field=field, message=message)])

    @classmethod
    def from_pydantic(cls, errors: Sequence[Any]) -> InvalidInput:
        """Every problem pydantic found, each with its field path (the first five in the
        message, all in `fields`)."""
        fields = [
            FieldError(
                field=_field_path(err["loc"]),
                message=str(err["msg"]).removeprefix("Value error, "),
            )
            for err in errors
        ]
        return cls("; ".join(f"{f.field}: {f.message}" for f in fields[:5]), fields)


class NotJson(ServiceError):
    """The body is not declared as JSON (415)."""

    status = 415
    reason = "invalid_input"


class BodyTimeout(ServiceError):
    """The client stopped sending its body for HYDRAREC_BODY_TIMEOUT_SECONDS (408)."""

    status = 408
    reason = "timeout"


class TooLarge(ServiceError):
    """The body is larger than HYDRAREC_MAX_BODY_BYTES (413)."""

    status = 413
    reason = "too_large"


class Unauthorized(ServiceError):
    """The API key is configured and the request does not carry it (401)."""

    status = 401
    reason = "unauthorized"
    headers = {"WWW-Authenticate": 'Bearer realm="hydrarec"'}


class AdminDisabled(ServiceError):
    """/admin/* without HYDRAREC_API_KEY: the routes do not exist (404)."""

    status = 404
    reason = "not_found"


class ReloadFailed(ServiceError):
    """The newest version cannot be served; the current one still is (409)."""

    status = 409
    reason = "reload_failed"


class ModelFault(ServiceError):
    """The model answered something no response may carry (a non-finite output) (500)."""

    status = 500
    reason = "internal"


class RetryLater(ServiceError):
    """A 503 that tells the client when to try again (Retry-After, seconds)."""

    status = 503

    def __init__(self, message: str, retry_after: int) -> None:
        super().__init__(message)
        self.headers = {"Retry-After": str(retry_after)}


class Overloaded(RetryLater):
    """The worker already answers HYDRAREC_MAX_IN_FLIGHT requests."""

    reason = "overloaded"


class NotReady(RetryLater):
    """No model is loaded and warmed up yet."""

    reason = "not_ready"


class StoreDown(RetryLater):
    """The event store failed or cannot be reached; nothing of the request took effect."""

    reason = "store_unavailable"


def _field_path(loc: Sequence[object]) -> str:
    """('candidates', 3) -> 'candidates[3]'; ('weights', 'click') -> 'weights.click';
    () (the body as a whole, e.g. invalid JSON) -> 'body'."""
    path = ""
    for part in loc:
        path += f"[{part}]" if isinstance(part, int) else f".{part}" if path else str(part)
    return path or "body"


def failure_answer(path: str, exc: Exception) -> ServiceError:
    """The answer to a request that raised `exc`: a ServiceError as it is, anything else as a
    500 `internal`. Internal errors are logged (a crash with its traceback); the client's
    message never carries one."""
    if isinstance(exc, ServiceError):
        if exc.status >= 500 and exc.reason == "internal":
            logger.error("internal error on %s: %s", path, exc.message)
        return exc
    logger.error("internal error on %s", path, exc_info=exc)
    return ServiceError("internal error; see the logs")
