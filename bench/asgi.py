"""`python -m bench.asgi`: hydrarec's request path without HTTP, in one process.

The service's own ASGI app (create_app, its lifespan, middleware, metrics in multiprocess mode
as a multi-worker server has them) is called directly with each of the HTTP runs' bodies, one
request at a time on a uvloop event loop, as uvicorn would call it: decode, encode,
session.run, rank, metrics, response encoding; no sockets, no HTTP parsing. Prints one JSON
line: requests/s and CPU microseconds per request. `make bench` runs it in a fresh process per
setting (prometheus_client picks its multiprocess mode at import, from the environment).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import uvloop

from harness.processes import REPOSITORY
from service.config import Settings
from service.main import create_app

Message = dict[str, Any]


def scope_for(body: bytes) -> dict[str, Any]:
    """The ASGI scope uvicorn builds for a POST /predict of `body`."""
    return {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.4"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": "/predict",
        "raw_path": b"/predict",
        "query_string": b"",
        "root_path": "",
        "headers": [
            (b"host", b"127.0.0.1:8000"),
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
        ],
        "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 8000),
        "state": {},
    }


async def call(app: Any, body: bytes) -> int:
    """One request through the app: its response status."""
    delivered = False
    status = 0

    async def receive() -> Message:
        nonlocal delivered
        if not delivered:
            delivered = True
            return {"type": "http.request", "body": body, "more_body": False}
        await asyncio.Event().wait()  # the client never disconnects
        raise AssertionError("unreachable")

    async def send(message: Message) -> None:
        nonlocal status
        if message["type"] == "http.response.start":
            status = message["status"]

    await app(scope_for(body), receive, send)
    return status


async def measure(bodies: list[bytes], seconds: float) -> dict[str, float]:
    """Requests/s and CPU µs per request of the app over `seconds`, after a warm-up."""
    app = create_app(Settings(model_dir=REPOSITORY, workers=1, ort_threads=1))
    async with app.router.lifespan_context(app):
        for body in bodies:
            if (status := await call(app, body)) != 200:
                raise RuntimeError(f"POST /predict answered {status}")
        n, cpu, began = 0, time.process_time(), time.perf_counter()
        while time.perf_counter() - began < seconds:
            await call(app, bodies[n % len(bodies)])
            n += 1
        wall, cpu = time.perf_counter() - began, time.process_time() - cpu
    return {"requests_per_second": n / wall, "cpu_us_per_request": cpu / n * 1e6}


def run(bodies: Path, seconds: float, settings: dict[str, str]) -> dict[str, float]:
    """`measure` in a fresh process with these HYDRAREC_* settings and its own metrics folder."""
    with tempfile.TemporaryDirectory() as metrics:
        env = os.environ | settings | {"PROMETHEUS_MULTIPROC_DIR": metrics}
        command = [sys.executable, "-m", "bench.asgi", str(bodies), f"--seconds={seconds}"]
        out = subprocess.run(command, env=env, capture_output=True, text=True, check=True)
    result: dict[str, float] = json.loads(out.stdout)
    return result


def cpu_per_request(bodies: Path, seconds: float, settings: dict[str, str]) -> float:
    """CPU µs per request of a `run`."""
    return run(bodies, seconds, settings)["cpu_us_per_request"]


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.asgi", description=__doc__)
    parser.add_argument("bodies", type=Path, help="JSON bodies, one per line")
    parser.add_argument("--seconds", type=float, default=5.0)
    args = parser.parse_args()
    bodies = [line.encode() for line in args.bodies.read_text().splitlines()]
    result = uvloop.run(measure(bodies, args.seconds))
    sys.stdout.write(json.dumps(result) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
