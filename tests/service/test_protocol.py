"""service/protocol.py: under a real uvicorn server, every response reaches the socket in one
write, whole and in order, also on a kept-alive connection and when the server closes it."""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
import uvicorn

from service.main import create_app
from service.protocol import CoalescingHttpToolsProtocol
from tests.service.conftest import settings_for
from tests.system.processes import free_port

BODY = json.dumps({"user_id": "196", "candidates": ["1", "50", "181"]}).encode()
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


class RecordedProtocol(CoalescingHttpToolsProtocol):
    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        recorded: Any = Recorder(transport)
        super().connection_made(recorded)


@pytest.fixture(scope="module")
def server() -> Iterator[int]:
    """The app under uvicorn on the coalescing protocol, in a thread; its port."""
    port = free_port()
    app = create_app(settings_for(max_body_bytes=4096))
    config = uvicorn.Config(app, port=port, http=RecordedProtocol, log_level="warning")
    running = uvicorn.Server(config)
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
