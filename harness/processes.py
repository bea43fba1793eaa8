"""Real processes for the system tests and the benchmarks: the service (`python -m service`),
free loopback ports, the Debian tools, and its /metrics read back.

Each service runs in its own process group and is stopped as a group (only the PIDs started
here), so no uvicorn worker outlives a test."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx2 as httpx
from prometheus_client.parser import text_string_to_metric_families

ROOT = Path(__file__).resolve().parents[1]
REPOSITORY = ROOT / "models"
DOCKER = ROOT / "docker"
START_TIMEOUT_S = 60.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def service_env(port: int, **settings: str) -> dict[str, str]:
    """This environment without HYDRAREC_* variables, plus the service's settings (by default
    an event store of its own, in a fresh temporary folder)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("HYDRAREC_")}
    state = tempfile.mkdtemp(prefix="hydrarec-state-")
    defaults = {
        "HYDRAREC_MODEL_DIR": str(REPOSITORY),
        "HYDRAREC_PORT": str(port),
        "HYDRAREC_ORT_THREADS": "1",
        "HYDRAREC_STORE_URL": f"sqlite:///{state}/events.db",
    }
    return env | defaults | settings


@dataclass
class Service:
    """A running `python -m service`; its output goes to `log` (a pipe could fill and block)."""

    process: subprocess.Popen[bytes]
    url: str
    log: Path

    def output(self) -> str:
        return self.log.read_text(errors="replace")


def wait_ready(service: Service, timeout_s: float = START_TIMEOUT_S) -> None:
    """Until GET /readyz answers 200; AssertionError if the server exits or the time is up."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if service.process.poll() is not None:
            raise AssertionError(f"server exited {service.process.returncode}: {service.output()}")
        try:
            if httpx.get(f"{service.url}/readyz", timeout=1.0).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    raise AssertionError(f"{service.url} not ready within {timeout_s} s: {service.output()}")


@contextmanager
def running_service(folder: Path, **settings: str) -> Iterator[Service]:
    """Start the service on a free port (or HYDRAREC_PORT in `settings`), wait until ready;
    kill it (by PID) on the way out."""
    port = int(settings.get("HYDRAREC_PORT") or free_port())
    log = folder / f"service-{port}.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "service"],
            env=service_env(port, **settings),
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: the workers go with it
        )
    service = Service(process, f"http://127.0.0.1:{port}", log)
    try:
        wait_ready(service)
        yield service
    finally:
        stop_group(process)


def stop_group(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM the server's process group (launcher and workers), SIGKILL what is left.

    Killing only the launcher would orphan uvicorn's worker processes."""
    for sig, grace_s in ((signal.SIGTERM, 10.0), (signal.SIGKILL, 5.0)):
        try:
            os.killpg(process.pid, sig)
        except ProcessLookupError:
            break  # the whole group is gone
        deadline = time.monotonic() + grace_s
        while time.monotonic() < deadline:
            process.poll()  # reap the launcher, or its zombie keeps the group alive
            if not _group_alive(process.pid):
                break
            time.sleep(0.05)
    process.wait()


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


def binary(name: str) -> str:
    """The path of a Debian-packaged tool; a clear failure (never a skip) where it is missing."""
    found = shutil.which(name)
    if found is None:
        raise FileNotFoundError(
            f"{name} not found: install the Debian packages with `make system-deps` "
            "(apt-get install -y prometheus docker-compose nginx chromium redis-server, as root)"
        )
    return found


def samples(url: str, family: str) -> list[tuple[dict[str, str], float]]:
    """The samples of one metric family on a service's /metrics."""
    text = httpx.get(f"{url}/metrics", timeout=10).text
    found = {f.name: f for f in text_string_to_metric_families(text)}
    return [(s.labels, s.value) for s in found[family].samples] if family in found else []


def total(url: str, family: str, **labels: str) -> float:
    """The sum of a family's samples whose labels include `labels`."""
    return sum(v for got, v in samples(url, family) if labels.items() <= got.items())


def wait_until(check: Callable[[], object], what: str, timeout_s: float = 30.0) -> None:
    """Until `check()` holds; a scrape cut by a dying worker is tried again."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            if check():
                return
        except httpx.TransportError:
            pass
        if time.monotonic() >= deadline:
            raise TimeoutError(what)
        time.sleep(0.1)
