"""A real redis-server (the Debian package) on 127.0.0.1, with the persistence the compose and
Kubernetes files give it (append-only file, fsync at every write), its data in the test's
folder. It can be stopped and started again on the same port and data (the fault tests)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from harness.processes import binary, free_port

PERSISTENCE = ("--appendonly", "yes", "--appendfsync", "always", "--save", "")


class RedisServer:
    """One redis-server process at a time on a fixed port and data folder."""

    def __init__(self, folder: Path, password: str | None = None) -> None:
        """`password`: the server requires it (requirepass); the URL carries it."""
        self.folder = folder
        self.port = free_port()
        self.password = password
        auth = f":{password}@" if password else ""
        self.url = f"redis://{auth}127.0.0.1:{self.port}/0"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        """Start it and wait until it accepts connections."""
        assert self.process is None, "already running"
        self.folder.mkdir(parents=True, exist_ok=True)
        self.process = subprocess.Popen(
            [
                binary("redis-server"),
                "--bind", "127.0.0.1",
                "--port", str(self.port),
                "--dir", str(self.folder),
                "--logfile", str(self.folder / "redis.log"),
                *PERSISTENCE,
                *(("--requirepass", self.password) if self.password else ()),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )  # fmt: skip
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return
            except OSError:
                log = self.folder / "redis.log"
                assert self.process.poll() is None, log.read_text() if log.exists() else ""
                assert time.monotonic() < deadline, "redis-server did not listen"
                time.sleep(0.05)

    def kill(self) -> None:
        """SIGKILL it, as a crash or a lost machine would end it (no chance to flush)."""
        assert self.process is not None, "not running"
        os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(timeout=10)
        self.process = None

    def stop(self) -> None:
        """Stop it by its PID (SIGTERM: it finishes its append-only file), then for certain."""
        if self.process is None:
            return
        for sig in (signal.SIGTERM, signal.SIGKILL):
            try:
                os.killpg(self.process.pid, sig)
                self.process.wait(timeout=10)
                break
            except ProcessLookupError:
                break
            except subprocess.TimeoutExpired:
                continue
        self.process = None


@contextmanager
def running_redis(folder: Path, password: str | None = None) -> Iterator[RedisServer]:
    """A started redis-server, stopped on the way out."""
    server = RedisServer(folder, password)
    server.start()
    try:
        yield server
    finally:
        server.stop()
