"""service/protocol.py under a real uvicorn server: every response reaches the socket in one
write, whole and in order, also on a kept-alive connection and when the server closes it; and a
lone /predict runs without the batcher, concurrent ones through it."""

from __future__ import annotations

import asyncio
import json
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
import uvicorn

from harness.processes import free_port
from service.main import create_app
from service.protocol import ServiceHttpProtocol
from tests.service.conftest import settings_for

BODY = json.dumps({"user_id": "196", "candidates": ["1", "50", "181"]}).encode()
CONCURRENT_CLIENT = """
import socket, sys
port, body = int(sys.argv[1]), sys.argv[2].encode()
head = "POST /predict HTTP/1.1\\r\\nHost: x\\r\\nContent-Type: application/json\\r\\n"
request = (head + f"Content-Length: {len(body)}\\r\\n\\r\\n").encode() + body
connections = [socket.create_connection(("127.0.0.1", port)) for _ in range(8)]
print("connected", flush=True)
sys.stdin.readline()
for connection in connections:
    connection.sendall(request)
print("sent", flush=True)
for connection in connections:
    answer = b""
    while b"\\r\\n\\r\\n" not in answer:
        answer += connection.recv(65536)
    print(answer.split()[1].decode())
"""
WRITES: list[bytes] = []  # what reached the real transports, in order


class Recorder:
    """Forwards to the real transport and records each write that reaches it."""

    def __init__(self, transport: asyncio.Transport) -> None:
        self._transport = transport

    def write(self, data: bytes) -> None:
        WRITES.append(bytes(data))
        self._transport.write(data)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)


class RecordedProtocol(ServiceHttpProtocol):
    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        recorded: Any = Recorder(transport)
        super().connection_made(recorded)


APP = create_app(settings_for(max_body_bytes=4096))  # dynamic batching on (the default)
RUNNING: list[uvicorn.Server] = []  # the module's server, for its event loop


@pytest.fixture(scope="module")
def server() -> Iterator[int]:
    """The app under uvicorn on the service's protocol, in a thread; its port."""
    port = free_port()
    app = APP
    config = uvicorn.Config(app, port=port, http=RecordedProtocol, log_level="warning")
    running = uvicorn.Server(config)
    RUNNING.append(running)
    thread = threading.Thread(target=running.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not running.started:
        assert thread.is_alive(), "the server did not start"
        assert time.monotonic() < deadline, "the server did not start in a minute"
        time.sleep(0.05)
    yield port
    running.should_exit = True
    thread.join(timeout=10)


def hold(loop: asyncio.AbstractEventLoop) -> threading.Event:
    """Block the server's event loop (a callback that waits) until the returned event is set."""
    release, held = threading.Event(), threading.Event()

    def block() -> None:
        held.set()
        release.wait(timeout=60)

    loop.call_soon_threadsafe(block)
    assert held.wait(timeout=10), "the server's loop never ran the hold"
    return release


def post(body: bytes, close: bool = False) -> bytes:
    head = (
        f"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n{'Connection: close' + chr(13) + chr(10) if close else ''}"
        "\r\n"
    )
    return head.encode() + body


def responses(connection: socket.socket, n: int) -> list[tuple[int, bytes]]:
    """Read n responses (status, body) of known length off the connection."""
    buffer, answers = b"", list[tuple[int, bytes]]()
    while len(answers) < n:
        while b"\r\n\r\n" not in buffer:
            buffer += connection.recv(65536)
        head, _, rest = buffer.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        length = int(
            next(v for k, _, v in (x.partition(": ") for x in lines) if k == "content-length")
        )
        while len(rest) < length:
            rest += connection.recv(65536)
        answers.append((int(lines[0].split()[1]), rest[:length]))
        buffer = rest[length:]
    return answers


def test_each_response_is_one_write(server: int) -> None:
    WRITES.clear()
    with socket.create_connection(("127.0.0.1", server)) as connection:
        connection.sendall(post(BODY) * 3)  # pipelined on one kept-alive connection
        answers = responses(connection, 3)
        connection.sendall(post(BODY, close=True))
        answers += responses(connection, 1)
        assert connection.recv(1) == b""  # then the server closed it
    assert [status for status, _ in answers] == [200] * 4
    assert all(json.loads(body)["items"] for _, body in answers)
    assert len(WRITES) == 4  # one write per response: status line, headers and body together
    for write, (_, body) in zip(WRITES, answers, strict=True):
        assert write.startswith(b"HTTP/1.1 200 OK\r\n")
        assert write.endswith(body)


def test_a_refusal_that_closes_the_connection_is_sent_whole(server: int) -> None:
    WRITES.clear()
    with socket.create_connection(("127.0.0.1", server)) as connection:
        connection.sendall(post(b"x" * 5000))  # over max_body_bytes: 413, connection closed
        [(status, body)] = responses(connection, 1)
        assert connection.recv(1) == b""
    assert status == 413
    assert json.loads(body)["error"] == "too_large"
    assert len(WRITES) == 1


def test_a_lone_request_skips_the_batcher_and_concurrent_ones_use_it(server: int) -> None:
    batcher = APP.state.models.current.batcher
    assert batcher is not None
    through: list[int] = []
    real_run = batcher.run

    async def counted(inputs: Any) -> Any:  # the real batcher, its calls counted
        through.append(len(inputs["candidate"]))
        return await real_run(inputs)

    batcher.run = counted
    try:
        with socket.create_connection(("127.0.0.1", server)) as connection:
            for _ in range(3):  # one after the other: each alone in the worker
                connection.sendall(post(BODY))
                assert responses(connection, 1)[0][0] == 200
        assert through == []
        # A client (a process of its own) opens eight connections; once the server holds them
        # all, its event loop is held while the client sends a request on each; released, the
        # loop reads them together, and each has company.
        client = subprocess.Popen(
            [sys.executable, "-c", CONCURRENT_CLIENT, str(server), BODY.decode()],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert client.stdin is not None
        assert client.stdout is not None
        assert client.stdout.readline().strip() == "connected"
        deadline = time.monotonic() + 10
        while len(RUNNING[0].server_state.connections) < 8:
            assert time.monotonic() < deadline, "the server never took the connections"
            time.sleep(0.01)
        release = hold(RUNNING[0].servers[0].get_loop())
        try:
            client.stdin.write("go\n")
            client.stdin.flush()
            assert client.stdout.readline().strip() == "sent"
        finally:
            release.set()
        statuses, _ = client.communicate(timeout=60)
        assert statuses.split() == ["200"] * 8
        assert through, "concurrent requests never reached the batcher"
    finally:
        batcher.run = real_run
