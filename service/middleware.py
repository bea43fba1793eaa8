"""Pure ASGI middleware: the HTTP request metrics, the body limits and the admission limit.

All are plain ASGI (not BaseHTTPMiddleware) so they see every request, including the ones they
or the framework reject, and cost one function call when nothing is wrong. Their order
(`create_app`): metrics outermost, then the body is read whole (size and deadline), and only
then is an admission slot taken, so a client that uploads slowly never holds a slot.
"""

from __future__ import annotations

import asyncio
import functools
import time
from collections.abc import Callable, Sequence

from starlette.routing import BaseRoute, Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.errors import BodyTimeout, Overloaded, ServiceError, TooLarge
from service.metrics import Metrics

METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
OTHER = "other"  # label of paths and methods the app does not route (bounded cardinality)
BODY_DONE = "hydrarec.body_done"  # scope key: perf_counter() when the whole body had arrived
CLIENT_GONE = "hydrarec.client_gone"  # scope key: the client disconnected before an answer
MODEL = "hydrarec.model"  # scope key: the model reference that answered the request
LIVE_REQUESTS = (
    "hydrarec.live_requests"  # scope key: the worker's running requests (service/protocol.py)
)
CLIENT_CLOSED = 499  # nginx's status for a client that closed the connection first


class _TooLarge(Exception):
    """The body grew past the limit (BodyLimit answers 413)."""


class BodyLimit:
    """Answers 413 as soon as a body is known to exceed `max_bytes`, by Content-Length or by
    counting a chunked body, without reading the rest, and 408 when the whole body has not
    arrived `timeout_s` after the request began (a deadline, not a per-chunk timer: a client
    sending one byte every few seconds is cut off too); complete bodies are replayed to the
    app. A client that disconnects mid-body gets nothing and is counted as 499."""

    def __init__(
        self,
        app: ASGIApp,
        max_bytes: int,
        timeout_s: float,
        on_reject: Callable[[Scope, str], None],
    ) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.timeout_s = timeout_s
        self.on_reject = on_reject

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] in ("GET", "HEAD"):
            scope[BODY_DONE] = time.perf_counter()
            await self.app(scope, receive, send)
            return
        declared = dict(scope["headers"]).get(b"content-length", b"")
        if declared.isdigit() and int(declared) > self.max_bytes:
            await self._reject(scope, send, self._too_large())
            return
        try:
            # One deadline for the whole body (a timer, not a task per receive as wait_for has)
            async with asyncio.timeout(self.timeout_s):
                body = await self._read(receive)
        except TimeoutError:
            await self._reject(scope, send, self._timeout())
            return
        except _TooLarge:
            await self._reject(scope, send, self._too_large())
            return
        if body is None:  # the client went away
            scope[CLIENT_GONE] = True
            return
        scope[BODY_DONE] = time.perf_counter()
        await self.app(scope, _replay(body, receive), send)

    async def _read(self, receive: Receive) -> bytes | None:
        """The whole body, or None when the client disconnected first.

        Raises:
            _TooLarge: more than max_bytes arrived.
        """
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                return None
            chunks.append(message.get("body", b""))
            size += len(chunks[-1])
            if size > self.max_bytes:
                raise _TooLarge
            if not message.get("more_body", False):
                return b"".join(chunks)

    def _too_large(self) -> ServiceError:
        return TooLarge(f"body: larger than HYDRAREC_MAX_BODY_BYTES={self.max_bytes} bytes")

    def _timeout(self) -> ServiceError:
        return BodyTimeout(
            f"body: not complete within HYDRAREC_BODY_TIMEOUT_SECONDS={self.timeout_s:g} s"
        )

    async def _reject(self, scope: Scope, send: Send, error: ServiceError) -> None:
        self.on_reject(scope, error.reason)
        await send_error(send, error, close=True)


async def send_error(send: Send, error: ServiceError, close: bool = False) -> None:
    """Answer with an ErrorBody straight from middleware (the app is never called)."""
    body = error.body().model_dump_json().encode()
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
        *((k.lower().encode(), v.encode()) for k, v in error.headers.items()),
    ]
    if close:  # the rest of the body is not read, so the connection cannot be reused
        headers.append((b"connection", b"close"))
    await send({"type": "http.response.start", "status": error.status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


class AdmissionLimit:
    """Admits at most `max_in_flight` requests to the `guarded` paths at once in this worker; the
    next get 503 with Retry-After at once, before their body is read, instead of a growing
    queue."""

    def __init__(
        self,
        app: ASGIApp,
        max_in_flight: int,
        guarded: Callable[[str], bool],
        retry_after: int,
        on_reject: Callable[[Scope], None],
    ) -> None:
        self.app = app
        self.max_in_flight = max_in_flight
        self.guarded = guarded
        self.retry_after = retry_after
        self.on_reject = on_reject
        self.in_flight = 0  # touched only on the event loop's thread

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not self.guarded(scope["path"]):
            await self.app(scope, receive, send)
            return
        if self.in_flight >= self.max_in_flight:
            self.on_reject(scope)
            message = f"{self.in_flight} requests in flight (HYDRAREC_MAX_IN_FLIGHT); retry later"
            await send_error(send, Overloaded(message, self.retry_after))
            return
        self.in_flight += 1
        try:
            await self.app(scope, receive, send)
        finally:
            self.in_flight -= 1


def _replay(body: bytes, receive: Receive) -> Receive:
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if sent:
            return await receive()
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    return replay


class HttpMetrics:
    """Counts, times and tracks in-flight requests by route template, method, status class and
    the model that answered (the one a /predict ran on, else the one being served)."""

    def __init__(
        self,
        app: ASGIApp,
        metrics: Metrics,
        routes: Sequence[BaseRoute],
        serving: Callable[[], tuple[str, str]],
    ) -> None:
        self.app = app
        self.metrics = metrics
        self.routes = routes
        self.serving = serving
        # Paths without parameters are their own template: one dict lookup per request.
        self.static = {p: p for r in routes if "{" not in (p := str(getattr(r, "path", "{")))}
        # Labelled children resolved once per label set (`labels()` takes a lock and a lookup,
        # about 1 µs, per call); every label value is bounded (templates, methods, classes).
        self._in_progress = functools.cache(metrics.in_progress.labels)
        self._duration = functools.cache(metrics.request_duration.labels)
        self._requests = functools.cache(metrics.requests.labels)

    def handler(self, scope: Scope) -> str:
        """The route template a request goes to (never the raw path), or `other`."""
        if scope["path"] in self.static:
            return self.static[scope["path"]]
        for route in self.routes:
            match, _ = route.matches(scope)
            if match != Match.NONE:
                return str(getattr(route, "path", OTHER))
        return OTHER

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        handler = self.handler(scope)
        method = scope["method"] if scope["method"] in METHODS else OTHER
        status = 0  # none sent yet

        async def record(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        in_progress = self._in_progress(handler)
        in_progress.inc()
        try:
            await self.app(scope, receive, record)
        finally:
            in_progress.dec()
            if not status:  # no answer: the client left, or the app raised before answering
                status = CLIENT_CLOSED if scope.get(CLIENT_GONE) else 500
            ref = scope.get(MODEL)
            model = (ref["name"], ref["version"]) if ref is not None else self.serving()
            if BODY_DONE in scope:  # a body that never arrived whole (408, 413, 499) is not timed
                elapsed = time.perf_counter() - scope[BODY_DONE]
                self._duration(handler, method, *model).observe(elapsed)
            label = "499" if status == CLIENT_CLOSED else f"{status // 100}xx"
            self._requests(handler, method, label, *model).inc()
