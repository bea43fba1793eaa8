"""Run the app under uvicorn with N worker processes on one listening socket.

With several workers uvicorn binds the socket itself, without TCP_NODELAY (asyncio sets it only
on sockets it creates), so every response written in two sends (headers, body) waited ~40 ms for
the client's delayed ACK: 23 requests/s per connection instead of ~700 (bench/results.md). Linux
copies TCP_NODELAY from a listening socket to the connections it accepts, so it is set there.
"""

from __future__ import annotations

import ctypes
import os
import signal
import socket

import uvicorn
from fastapi import FastAPI
from uvicorn.supervisors import Multiprocess

from service.config import SUPERVISOR_PID, Settings
from service.main import create_app

APP = "service.main:create_app"
WORKER_APP = "service.server:create_worker_app"
PR_SET_PDEATHSIG = 1  # linux/prctl.h
EXIT_STARTUP_FAILED = 3  # uvicorn's own status when the app's start-up fails


class NoDelayConfig(uvicorn.Config):
    """uvicorn's config, whose listening socket has Nagle's algorithm off."""

    def bind_socket(self) -> socket.socket:
        sock = super().bind_socket()
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return sock


def create_worker_app() -> FastAPI:
    """The app of one worker process, which ends when its supervisor does.

    uvicorn stops its workers when it is stopped, but a supervisor killed outright (SIGKILL,
    the OOM killer) cannot, and its workers would serve on as orphans; Linux sends them SIGTERM
    when their parent dies instead."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    if os.getppid() != int(os.environ[SUPERVISOR_PID]):  # it died before prctl took effect
        os.kill(os.getpid(), signal.SIGTERM)
    return create_app()


def serve(settings: Settings) -> int:
    """Serve until SIGINT/SIGTERM; the exit status (0, or 3 when start-up failed)."""
    config = NoDelayConfig(
        WORKER_APP if settings.workers > 1 else APP,
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
        os.environ[SUPERVISOR_PID] = str(os.getpid())  # inherited by the workers
        Multiprocess(config, sockets=[sock]).run()
        return 0
    server.run(sockets=[sock])
    return 0 if server.started else EXIT_STARTUP_FAILED
