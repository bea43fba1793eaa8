"""POST /predict as one plain ASGI callable, taken before FastAPI's routing.

`PredictEndpoint` sits innermost among the app's middleware (after the metrics, the body limits
and the admission limit, so /predict keeps all of them) and answers POST /predict itself: the
API key, the JSON content type, the model, then `predict`. Everything else goes on to FastAPI.
Skipped for /predict: the framework's exception middleware, its exit-stack middleware, route
matching, the Request object and the dependency calls: the app's cost around the handler fell
from 122-179 to 62-98 µs per request in process (docs/changelog.md). The route stays declared
in service/routes.py with the same checks as dependencies, so the OpenAPI document (security
schemes, body, errors) is FastAPI's own; a test holds the two to the same answers. Failures are
answered as the app's exception handlers answer them (service.errors.failure_answer).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import orjson
from starlette.types import ASGIApp, Receive, Scope, Send

from service.config import Settings
from service.decoding import decode_request
from service.deps import bearer_credentials, check_api_key, check_json
from service.errors import NotReady, failure_answer
from service.lifecycle import ModelHolder
from service.memory import Memory, with_history
from service.metrics import Metrics
from service.middleware import LIVE_REQUESTS, MODEL, send_error
from service.predictor import Predictor

PREDICT_PATH = "/predict"
HEADERS = (b"x-api-key", b"authorization", b"content-type")  # the ones /predict reads
JSON_TYPE = (b"content-type", b"application/json")


async def predict(
    body: bytes,
    predictor: Predictor,
    settings: Settings,
    metrics: Metrics,
    memory: Memory,
    alone: bool = False,
) -> bytes:
    """Every task's output for one user: profile class probabilities and the ranked candidates
    (the PredictResponse body, as JSON bytes); a request without `history` is answered with the
    user's history in the store (service.memory.with_history).

    All of it runs on the event loop: with one core per worker there is nothing to overlap, and
    a thread hop per request cost more than the work around the model. With dynamic batching
    (service/batching.py) concurrent requests share one session.run, on the loop too; a request
    `alone` in its worker (no other could join its batch) runs at once, as without batching."""
    with metrics.stage["decode"].time():
        request = decode_request(body, settings.max_candidates, settings.max_exclude)
    request, source = await with_history(
        request, memory, predictor.artifact.manifest.history_length
    )
    if request.explain:  # runs of its own, both modes
        answer = predictor.explained(request, metrics)
    elif request.candidates is None:  # recommend mode: its two runs are not batched
        answer = predictor.recommend(request, metrics)
    elif predictor.batcher is not None and not alone:
        answer = await predictor.predict_batched(request, metrics)
    else:
        answer = predictor.predict(request, metrics)
        if predictor.batcher is not None:
            metrics.batch_requests.observe(1)  # a batch of one, without the batcher's turn
    answer["history_source"] = source
    with metrics.stage["encode_response"].time():
        return orjson.dumps(answer)


class PredictEndpoint:
    """Middleware that serves POST /predict and passes every other request on."""

    def __init__(
        self,
        app: ASGIApp,
        models: ModelHolder,
        settings: Settings,
        metrics: Metrics,
        memory: Callable[[], Memory],
        on_failure: Callable[[Scope, str], None],
    ) -> None:
        self.app = app
        self.models = models
        self.settings = settings
        self.metrics = metrics
        self.memory = memory  # the worker's store, opened by the lifespan
        self.on_failure = on_failure

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] != PREDICT_PATH or scope["method"] != "POST":
            await self.app(scope, receive, send)
            return
        try:
            payload = await self._answer(scope, receive)
        except Exception as e:  # noqa: BLE001 - answered as the app's exception handlers answer
            error = failure_answer(PREDICT_PATH, e)
            self.on_failure(scope, error.reason)
            await send_error(send, error)
            return
        length = (b"content-length", str(len(payload)).encode())
        await send({"type": "http.response.start", "status": 200, "headers": [JSON_TYPE, length]})
        await send({"type": "http.response.body", "body": payload})

    async def _answer(self, scope: Scope, receive: Receive) -> bytes:
        """The checks in the route's order (API key, content type, model), then the answer.

        Raises:
            service.errors.ServiceError: what the route's dependencies or `predict` raise.
        """
        headers = first_headers(scope, HEADERS)
        check_api_key(
            self.settings,
            headers.get(b"x-api-key"),
            bearer_credentials(headers.get(b"authorization")),
        )
        check_json(headers.get(b"content-type", ""))
        body = await read_all(receive)
        predictor = self.models.current
        if predictor is None:
            raise NotReady("the model is not loaded yet", self.settings.retry_after_seconds)
        scope[MODEL] = predictor.ref  # the request's metrics name the model that answered
        return await predict(
            body, predictor, self.settings, self.metrics, self.memory(), alone(scope)
        )


def alone(scope: Scope) -> bool:
    """Whether this is the only request its worker is answering, as the server says
    (service/protocol.py); False where the server does not say."""
    live = scope.get(LIVE_REQUESTS)
    return live is not None and len(live) <= 1


def first_headers(scope: Scope, names: tuple[bytes, ...]) -> Mapping[bytes, str]:
    """The first value of each of these (lower-case) headers that the request carries, decoded
    as Latin-1, as Starlette's `Headers.get` reads them."""
    found: dict[bytes, str] = {}
    for name, value in scope["headers"]:
        if name in names and name not in found:
            found[name] = value.decode("latin-1")
    return found


async def read_all(receive: Receive) -> bytes:
    """The request body (BodyLimit has read it whole and hands it over as one message)."""
    chunks = []
    while True:
        message = await receive()
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            return b"".join(chunks)
