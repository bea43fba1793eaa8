"""Start a peer on 127.0.0.1, in its own process group (stopped by PID on the way out)."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from bench.memory import tree
from harness.processes import Service, free_port, stop_group, wait_ready

ROOT = Path(__file__).resolve().parents[2]
PEERS_VENV = ROOT / ".venv-peers"  # built from requirements.txt by `make bench ARGS=--peers`
READY_TIMEOUT_S = 120.0


def fastapi_command(port: int, workers: int) -> list[str]:
    return [
        sys.executable, "-m", "uvicorn", "bench.peers.fastapi_app:app", "--host", "127.0.0.1",
        "--port", str(port), "--workers", str(workers), "--log-level", "warning",
    ]  # fmt: skip


def asgi_command(port: int, workers: int) -> list[str]:
    return [
        sys.executable, "-m", "uvicorn", "bench.peers.asgi_app:app", "--host", "127.0.0.1",
        "--port", str(port), "--workers", str(workers), "--log-level", "warning",
    ]  # fmt: skip


def bentoml_command(port: int, workers: int) -> list[str]:
    del workers  # the service declares them (HYDRAREC_PEER_WORKERS)
    return [
        str(PEERS_VENV / "bin" / "bentoml"), "serve", "bench.peers.bentoml_service:Predictor",
        "--host", "127.0.0.1", "--port", str(port),
    ]  # fmt: skip


PEERS: dict[str, Callable[[int, int], list[str]]] = {
    "FastAPI": fastapi_command,
    "bare ASGI": asgi_command,
    "BentoML": bentoml_command,
}


def missing() -> str | None:
    """Why the peers cannot run here, or None."""
    if not (PEERS_VENV / "bin" / "bentoml").exists():
        return f"no {PEERS_VENV}/bin/bentoml: `make bench ARGS=--peers` builds it"
    return None


@contextmanager
def serving(peer: str, model: Path, workers: int, log: Path) -> Iterator[Service]:
    """The peer serving `model` with `workers` workers, once its /readyz answers."""
    port = free_port()
    env = os.environ | {
        "HYDRAREC_PEER_MODEL": str(model),
        "HYDRAREC_PEER_WORKERS": str(workers),
        "PYTHONPATH": str(ROOT),
        "BENTOML_DO_NOT_TRACK": "true",  # no usage reporting (no network here anyway)
    }
    with log.open("wb") as out:
        process = subprocess.Popen(
            PEERS[peer](port, workers),
            cwd=ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    service = Service(process, f"http://127.0.0.1:{port}", log)
    try:
        wait_ready(service, READY_TIMEOUT_S)
        yield service
    finally:
        members = tree(process.pid)  # BentoML's workers run in sessions of their own
        stop_group(process)
        for pid in members[1:]:  # any its supervisor left behind
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
