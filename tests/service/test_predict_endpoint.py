"""POST /predict is answered ahead of FastAPI's routing (service/predict_endpoint.py): the same
answer, status and headers as the declared route gives through the framework, for good and bad
requests alike."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from starlette.types import ASGIApp

from service.errors import ModelFault
from service.main import create_app
from service.predict_endpoint import PredictEndpoint, first_headers
from service.predictor import Predictor
from tests.service.conftest import settings_for

KEY = "a-long-enough-secret-key"
OK = {"user_id": "196", "history": ["242", "302"], "candidates": ["1", "50", "181", "nope"]}
Answer = tuple[int, dict[str, str], Any]
Runner = Callable[..., Any]  # runs an async callable with its arguments to the end


@pytest.fixture(scope="module")
def keyed() -> Iterator[TestClient]:
    with TestClient(create_app(settings_for(api_key=KEY))) as c:
        yield c


def framework_of(app: FastAPI) -> ASGIApp:
    """What PredictEndpoint passes requests on to: FastAPI's exception middleware and routing."""
    layer: Any = app.middleware_stack
    while not isinstance(layer, PredictEndpoint):
        layer = layer.app
    return layer.app


def call(owner: FastAPI, run: Runner, app: ASGIApp, headers: dict[str, str], body: bytes) -> Answer:
    """POST /predict of `owner` straight into its layer `app` (the body whole, as BodyLimit hands
    it on), called by `run`: the answer's status, the headers that matter, the JSON body."""
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": body, "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "method": "POST",
        "path": "/predict",
        "raw_path": b"/predict",
        "query_string": b"",
        "root_path": "",
        "headers": [(k.lower().encode(), v.encode()) for k, v in headers.items()],
        "app": owner,
        "state": {},
    }
    run(app, scope, receive, send)
    start, answer = sent[0], b"".join(m.get("body", b"") for m in sent[1:])
    kept = {k.decode(): v.decode() for k, v in start["headers"]}
    kept = {k: kept[k] for k in ("content-type", "www-authenticate", "retry-after") if k in kept}
    return start["status"], kept, json.loads(answer)


JSON = {"content-type": "application/json"}
REQUESTS = [
    ({**JSON, "x-api-key": KEY}, OK),
    ({**JSON, "authorization": f"bearer  {KEY} "}, OK),
    ({**JSON, "authorization": f"Basic {KEY}"}, OK),
    (JSON, OK),
    ({**JSON, "x-api-key": "wrong"}, OK),
    ({"content-type": "text/plain", "x-api-key": KEY}, OK),
    ({"x-api-key": KEY}, OK),
    ({"content-type": "application/vnd.api+json; charset=utf-8", "x-api-key": KEY}, OK),
    ({**JSON, "x-api-key": KEY}, {"user_id": "1", "candidates": ["1", "1"]}),
    ({**JSON, "x-api-key": KEY}, {"user_id": "1", "candidates": ["1"], "weights": {"age": 1}}),
    ({**JSON, "x-api-key": KEY}, {**OK, "top_k": 2, "weights": {"like": 2.0}}),
    ({**JSON, "x-api-key": KEY}, b"{not json"),
]


@pytest.mark.parametrize(("headers", "body"), REQUESTS)
def test_same_answer_as_the_route(keyed: TestClient, headers: dict[str, str], body: Any) -> None:
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    app, portal = keyed.app, keyed.portal
    assert isinstance(app, FastAPI)
    assert portal is not None
    assert app.middleware_stack is not None  # built when the client started the app
    fast = call(app, portal.call, app.middleware_stack, headers, raw)
    assert fast == call(app, portal.call, framework_of(app), headers, raw)
    assert fast[0] in (200, 401, 415, 422)


@pytest.mark.parametrize(
    ("fault", "message", "logged"),
    [
        (RuntimeError("boom"), "internal error; see the logs", "Traceback"),
        (ModelFault("the model's click output is not finite"), "not finite", "not finite"),
    ],
)
def test_failures_inside_predict_are_answered_as_the_handlers_answer(
    keyed: TestClient,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    fault: Exception,
    message: str,
    logged: str,
) -> None:
    """Fault injection: ranking raises; both paths answer 500 `internal` and log it."""

    def broken(*_: object) -> None:
        raise fault

    monkeypatch.setattr(Predictor, "rank", broken)
    app, portal = keyed.app, keyed.portal
    assert isinstance(app, FastAPI)
    assert portal is not None
    assert app.middleware_stack is not None
    headers, raw = {**JSON, "x-api-key": KEY}, json.dumps(OK).encode()
    with caplog.at_level(logging.ERROR, logger="hydrarec"):
        fast = call(app, portal.call, app.middleware_stack, headers, raw)
    assert fast[0] == 500
    assert fast[2]["error"] == "internal"
    assert message in fast[2]["message"]
    assert logged in caplog.text
    routed = framework_of(app)
    if isinstance(fault, ModelFault):  # FastAPI's exception middleware answers it the same
        assert call(app, portal.call, routed, headers, raw) == fast
    else:  # a crash is answered by Starlette's outermost error middleware, above that layer
        with pytest.raises(RuntimeError, match="boom"):
            call(app, portal.call, routed, headers, raw)


def test_not_ready_is_the_same_too() -> None:
    app = create_app(settings_for())  # its lifespan never runs: no model is loaded

    def run(f: Callable[..., Any], *args: Any) -> None:
        asyncio.run(f(*args))

    stack = app.middleware_stack = app.build_middleware_stack()
    raw = json.dumps(OK).encode()
    fast = call(app, run, stack, JSON, raw)
    assert fast == call(app, run, framework_of(app), JSON, raw)
    assert fast[0] == 503
    assert fast[1]["retry-after"]
    assert fast[2]["error"] == "not_ready"


def test_the_openapi_document_keeps_the_route() -> None:
    operation = create_app(settings_for()).openapi()["paths"]["/predict"]["post"]
    assert operation["operationId"] == "predict_predict_post"
    assert {"APIKeyHeader", "HTTPBearer"} <= {k for s in operation["security"] for k in s}
    assert (
        "user_id" in operation["requestBody"]["content"]["application/json"]["schema"]["properties"]
    )
    assert {"401", "415", "422", "503"} <= set(operation["responses"])


def test_first_headers_takes_the_first_of_each() -> None:
    scope = {"headers": [(b"x-api-key", b"a"), (b"other", b"b"), (b"x-api-key", b"c")]}
    assert first_headers(scope, (b"x-api-key", b"authorization")) == {b"x-api-key": "a"}
