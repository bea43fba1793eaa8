"""Run the app under uvicorn with N worker processes on one listening socket.

With several workers uvicorn binds the socket itself, without TCP_NODELAY (asyncio sets it only
on sockets it creates), so every response written in two sends (headers, body) waited ~40 ms for
the client's delayed ACK: 23 requests/s per connection instead of ~700 (bench/results.md). Linux
copies TCP_NODELAY from a listening socket to the connections it accepts, so it is set there.
"""

from __future__ import annotations

import socket

import uvicorn
from uvicorn.supervisors import Multiprocess

from service.config import Settings

APP = "service.main:create_app"
EXIT_STARTUP_FAILED = 3  # uvicorn's own status when the app's start-up fails


class NoDelayConfig(uvicorn.Config):
    """uvicorn's config, whose listening socket has Nagle's algorithm off."""

    def bind_socket(self) -> socket.socket:
        sock = super().bind_socket()
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return sock


def serve(settings: Settings) -> int:
    """Serve until SIGINT/SIGTERM; the exit status (0, or 3 when start-up failed)."""
    config = NoDelayConfig(
        APP,
        factory=True,
        host=settings.host,
        port=settings.port,
        workers=settings.workers,
        log_level=settings.log_level,
        timeout_graceful_shutdown=settings.graceful_shutdown_seconds,
    )
    server = uvicorn.Server(config)
    sock = config.bind_socket()
    if settings.workers > 1:
        Multiprocess(config, sockets=[sock]).run()
        return 0
    server.run(sockets=[sock])
    return 0 if server.started else EXIT_STARTUP_FAILED
