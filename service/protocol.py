"""uvicorn's httptools protocol as the workers run it: a response's head and body in one write,
and each request told how many requests its worker is answering.

uvicorn writes a response in two calls, the status line and headers, then the body, and each
goes to the socket at once: two system calls, two TCP segments (the sockets have Nagle's
algorithm off, service/server.py), and two wake-ups of the client for one answer. Here the
connection's transport is wrapped: a write is held until the next one, and the two go out
joined, so a whole response leaves in one segment as soon as its body is written; what is still
held at the end of the loop turn (a streamed chunk, a 100 Continue) goes out then
(`loop.call_soon`), so nothing waits for more than a turn (docs/changelog.md). Closing
flushes first, so nothing written is lost or reordered; what is held when the client has gone
is dropped, as the transport itself would drop it. Everything else is the transport's own.

Every request's scope also carries the worker's set of running request tasks (LIVE_REQUESTS,
uvicorn's own set, this request's task included), so /predict can tell a lone request, which no
other could join in a batch, from one that has company (service/predict_endpoint.py).
"""

from __future__ import annotations

import asyncio
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from service.middleware import LIVE_REQUESTS


class CoalescingTransport:
    """A transport that holds a write until the next one, or until the end of the loop turn,
    and sends the two joined: a response's head waits for its body, never for the loop."""

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        self._transport = transport
        self._loop = loop
        self._held: bytes | None = None

    def write(self, data: bytes) -> None:
        if self._held is None:
            self._held = data
            self._loop.call_soon(self.flush)
        else:
            held, self._held = self._held, None
            self._transport.write(b"".join((held, data)))

    def flush(self) -> None:
        """Send what is held (dropped if the client has gone since)."""
        if self._held is not None:
            held, self._held = self._held, None
            if not self._transport.is_closing():
                self._transport.write(held)

    def close(self) -> None:
        self.flush()
        self._transport.close()

    def __getattr__(self, name: str) -> Any:  # every other method and attribute: the transport's
        return getattr(self._transport, name)


class ServiceHttpProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol on a CoalescingTransport, its requests' scopes carrying the
    worker's running requests."""

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        wrapped: Any = CoalescingTransport(transport, self.loop)
        super().connection_made(wrapped)

    def on_headers_complete(self) -> None:
        self.scope[LIVE_REQUESTS] = self.tasks  # type: ignore[literal-required]
        super().on_headers_complete()
