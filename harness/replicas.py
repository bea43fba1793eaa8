"""Replicas of the service started on loopback ports, and clients loading them with /predict
until stopped (bounded in requests): what the replica tests and `make bench-replicas` run."""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx2 as httpx

from harness.processes import Service, running_service, total

BODY = {"user_id": "196", "history": ["242", "302"], "candidates": ["1", "50", "181"]}
MAX_REQUESTS = 3000  # a bound on every load below


@dataclass
class Load:
    """Clients sending /predict through nginx until stopped (at most `limit` requests)."""

    url: str
    limit: int = MAX_REQUESTS
    statuses: list[int] = field(default_factory=list)
    versions: list[str] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)

    def run(self) -> None:
        with httpx.Client(timeout=10) as client:
            while not self.stop.is_set() and len(self.statuses) < self.limit:
                try:
                    answer = client.post(f"{self.url}/predict", json=BODY)
                except httpx.TransportError:
                    self.statuses.append(0)
                    continue
                self.statuses.append(answer.status_code)
                if answer.status_code == 200:
                    self.versions.append(answer.json()["model"]["version"])

    @property
    def failed(self) -> int:
        return sum(1 for s in self.statuses if s != 200)


@contextmanager
def load(url: str, clients: int = 3, limit: int = MAX_REQUESTS) -> Iterator[Load]:
    """`clients` threads sending /predict to `url` while the block runs."""
    running = Load(url, limit)
    threads = [threading.Thread(target=running.run) for _ in range(clients)]
    for t in threads:
        t.start()
    try:
        yield running
    finally:
        running.stop.set()
        for t in threads:
            t.join(timeout=30)


def replica(stack: ExitStack, folder: Path, port: int, **settings: str) -> Service:
    """A replica on `port` (1 worker unless `settings` say otherwise), stopped with `stack`."""
    chosen = {"HYDRAREC_PORT": str(port), "HYDRAREC_WORKERS": "1"} | settings
    return stack.enter_context(running_service(folder, **chosen))


def served(service: Service) -> float:
    """/predict requests a replica has answered (its counter)."""
    return total(service.url, "hydrarec_http_requests", handler="/predict")


def kill(service: Service) -> None:
    """SIGKILL a replica's process group, as a crash would end it."""
    os.killpg(service.process.pid, signal.SIGKILL)
    service.process.wait()
