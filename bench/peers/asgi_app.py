"""The bare baseline: a hand-written ASGI callable on uvicorn, no framework: the body read and
`json.loads`-ed, the shared peer model (bench/peers/model.py), `json.dumps`. No validation,
metrics, limits or batching: what the work of /predict costs over HTTP on uvicorn with nothing
around it (docs/performance.md)."""

from __future__ import annotations

import json
from typing import Any

from bench.peers.model import load

model = load()
Message = dict[str, Any]


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] == "lifespan":
        while (message := await receive())["type"] != "lifespan.shutdown":
            await send({"type": message["type"] + ".complete"})
        await send({"type": "lifespan.shutdown.complete"})
        return
    body = b""
    while True:
        message = await receive()
        body += message.get("body", b"")
        if not message.get("more_body", False):
            break
    if scope["path"] == "/predict":
        request = json.loads(body)
        answer = model.predict(
            request["user_id"], request.get("history", []), request["candidates"]
        )
        status, payload = 200, json.dumps(answer).encode()
    else:  # /readyz
        status, payload = 200, b'{"status":"ok"}'
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(payload)).encode()),
    ]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": payload})
