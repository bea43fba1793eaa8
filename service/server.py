"""Run the app under uvicorn with N worker processes, each on its own listening socket.

Sockets: with several workers uvicorn binds the socket itself, without TCP_NODELAY (asyncio sets
it only on sockets it creates), so every response written in two sends (headers, body) waited
~40 ms for the client's delayed ACK: 23 requests/s per connection instead of ~700. Linux copies
TCP_NODELAY from a listening socket to the connections it accepts, so it is set there.

One socket per worker: workers sharing one listening socket race to accept, and the first awake
often takes most new connections; with 8 keep-alive connections half of the benchmark runs had
one worker doing nearly all the work (~1,150 against ~2,200 requests/s). Each worker gets its
own socket bound with SO_REUSEPORT, and the kernel spreads connections over them. A port that
another program holds is still refused: it is probed without SO_REUSEPORT first. Only Linux
balances SO_REUSEPORT sockets (macOS and the BSDs hand every connection to one of them), so
elsewhere the workers share one socket, and say so in the log.

The supervisor is uvicorn's own, with three changes (`OwnSocketMultiprocess`): worker i keeps
socket i when it is replaced; a worker that exits before it ever served stops the server with
a non-zero status instead of being restarted for ever (or ending it with 0); and a worker that
dies or is replaced is marked dead for the metrics, so its in-flight gauge and model series go.
"""

from __future__ import annotations

import ctypes
import logging
import os
import signal
import socket
import sys

import uvicorn
from fastapi import FastAPI
from uvicorn.config import STARTUP_FAILURE
from uvicorn.supervisors.multiprocess import Multiprocess, Process

from service.config import SUPERVISOR_PID, Settings
from service.main import create_app
from service.metrics import forget_worker
from service.protocol import ServiceHttpProtocol

APP = "service.main:create_app"
WORKER_APP = "service.server:create_worker_app"
PR_SET_PDEATHSIG = 1  # linux/prctl.h
EXIT_STARTUP_FAILED = STARTUP_FAILURE  # uvicorn's own status when the app's start-up fails
logger = logging.getLogger("uvicorn.error")


def balanced_reuse_port() -> bool:
    """Whether the kernel spreads connections over SO_REUSEPORT sockets (Linux only)."""
    return sys.platform.startswith("linux") and hasattr(socket, "SO_REUSEPORT")


class NoDelayConfig(uvicorn.Config):
    """uvicorn's config, whose listening sockets have Nagle's algorithm off and, where the
    kernel balances them, SO_REUSEPORT on (several of them share the port, one per worker)."""

    def bind_socket(self) -> socket.socket:
        sock = self._bound(reuse_port=balanced_reuse_port())
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.set_inheritable(True)
        return sock

    def listening_sockets(self) -> list[socket.socket]:
        """One listening socket per worker (Linux), or one shared by all of them."""
        if self.workers > 1 and not balanced_reuse_port():
            logger.info(
                "%s does not balance SO_REUSEPORT sockets: the %d workers share one socket",
                sys.platform,
                self.workers,
            )
            shared = self.bind_socket()
            sockets = [shared] * self.workers
        else:
            sockets = [self.bind_socket() for _ in range(self.workers)]
        for sock in set(sockets):
            sock.listen(self.backlog)
        return sockets

    def probe_port(self) -> None:
        """Refuse a port some other socket holds (SO_REUSEPORT alone would share it with
        another program of the same user).

        Raises:
            PortUnavailable: the address is in use or cannot be bound.
        """
        self._bound(reuse_port=False).close()

    def _bound(self, reuse_port: bool) -> socket.socket:
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if reuse_port:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        try:
            sock.bind((self.host, self.port))
        except OSError as e:
            sock.close()
            raise PortUnavailable(f"cannot listen on {self.host}:{self.port}: {e.strerror}") from e
        return sock


class PortUnavailable(Exception):
    """The configured host:port cannot be listened on."""


class OwnSocketMultiprocess(Multiprocess):
    """uvicorn's supervisor, with worker i serving socket i, also when it is replaced."""

    def __init__(self, config: uvicorn.Config, sockets: list[socket.socket]) -> None:
        super().__init__(config, sockets)
        self.started: list[bool] = []  # per worker: has it ever reported its start-up done
        self.startup_failed = False

    def init_processes(self) -> None:
        for sock in self.sockets:
            process = Process(self.config, [sock])
            process.start()
            self.processes.append(process)
            self.started.append(False)

    def keep_subprocess_alive(self) -> None:
        """uvicorn's own, except that a replacement gets its predecessor's socket, a worker
        that failed to start stops the server (it would fail the same way again: a model or
        setting it cannot load), and the dead are forgotten by the metrics."""
        if self.should_exit.is_set():
            return
        for idx, process in enumerate(self.processes):
            # None: dead or hung; False: still starting; True: serving
            health = (
                process._healthcheck(self.config.timeout_worker_healthcheck)
                if process.process.is_alive()
                else None
            )
            if health is not None:
                self.started[idx] = self.started[idx] or health
                continue
            process.kill()
            process.join()
            _forget(process)
            if self.should_exit.is_set():
                return
            if _failed_to_start(process, self.started[idx]):
                logger.error(
                    "worker %s failed to start (exit status %s); stopping the server",
                    process.pid,
                    process.exitcode,
                )
                self.startup_failed = True
                self.should_exit.set()
                return
            logger.info("worker %s died, starting another", process.pid)
            replacement = Process(self.config, [self.sockets[idx]])
            replacement.start()
            self.processes[idx] = replacement
            self.started[idx] = False

    def restart_all(self) -> None:
        """SIGHUP: replace the workers one by one, each on its own socket."""
        for idx, old in enumerate(self.processes):
            if self.should_exit.is_set():
                return
            new = Process(self.config, [self.sockets[idx]])
            new.start()
            if not new.wait_until_ready(self.config.timeout_worker_healthcheck, self.should_exit):
                new.kill()
                new.join()
                logger.error("worker %s was not ready in time; restart aborted", new.pid)
                return
            old.terminate()
            old.join()
            _forget(old)
            self.processes[idx] = new
            self.started[idx] = True


def _failed_to_start(process: Process, seen_started: bool) -> bool:
    """uvicorn's start-up failure status (the lifespan failed), or an exit of its own with an
    error before the worker was seen serving (the app factory raised). A worker killed by a
    signal (the OOM killer, an operator) is replaced, whenever it died."""
    code = process.exitcode
    return code == STARTUP_FAILURE or (not seen_started and code is not None and code > 0)


def _forget(process: Process) -> None:
    if process.pid is not None:
        forget_worker(process.pid)


def create_worker_app() -> FastAPI:
    """The app of one worker process, which ends when its supervisor does."""
    end_with_supervisor()
    return create_app()


def end_with_supervisor() -> None:
    """uvicorn stops its workers when it is stopped, but a supervisor killed outright (SIGKILL,
    the OOM killer) cannot, and its workers would serve on as orphans; Linux sends them SIGTERM
    when their parent dies instead. Elsewhere there is no such call, and the log says so."""
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    else:
        logger.info(
            "no PR_SET_PDEATHSIG on %s: a worker outlives a supervisor killed with SIGKILL",
            sys.platform,
        )
    if os.getppid() != int(os.environ[SUPERVISOR_PID]):  # it died before prctl took effect
        os.kill(os.getpid(), signal.SIGTERM)


def serve(settings: Settings) -> int:
    """Serve until SIGINT/SIGTERM; the exit status (0, or 3 when a worker's start-up failed)."""
    config = NoDelayConfig(
        WORKER_APP if settings.workers > 1 else APP,
        factory=True,
        host=settings.host,
        port=settings.port,
        workers=settings.workers,
        log_level=settings.log_level,
        access_log=settings.access_log,
        timeout_graceful_shutdown=settings.graceful_shutdown_seconds,
        http=ServiceHttpProtocol,
    )
    server = uvicorn.Server(config)
    config.probe_port()
    sockets = config.listening_sockets()
    if settings.workers > 1:
        os.environ[SUPERVISOR_PID] = str(os.getpid())  # inherited by the workers
        supervisor = OwnSocketMultiprocess(config, sockets=sockets)
        supervisor.run()
        return EXIT_STARTUP_FAILED if supervisor.startup_failed else 0
    server.run(sockets=sockets)
    return 0 if server.started else EXIT_STARTUP_FAILED
