"""Several workers under the real supervisor: start-up failures, dead workers, slow copies.

Each test starts `python -m service` with two workers on 127.0.0.1 and stops it by its process
group; worker PIDs are read from /proc (children of the supervisor)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx2 as httpx
import pytest

from harness.processes import (
    REPOSITORY,
    Service,
    free_port,
    running_service,
    samples,
    service_env,
    total,
    wait_until,
)
from service.artifact import Manifest, write_manifest
from service.repository import load_artifact
from tests.service.conftest import publish_copy

pytestmark = pytest.mark.system

SOURCE = load_artifact(REPOSITORY, "movielens").path
FIRST = int(SOURCE.name)
IN_FLIGHT = "hydrarec_http_requests_in_progress"
BODY = json.dumps({"user_id": "196", "history": ["242"], "candidates": ["1", "50"]}).encode()


def workers_of(supervisor: int) -> list[int]:
    """PIDs of the supervisor's uvicorn workers (multiprocessing spawn children)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            cmdline = (entry / "cmdline").read_bytes()
        except (OSError, IndexError, ValueError):
            continue
        if ppid == supervisor and b"spawn_main" in cmdline:
            found.append(int(entry.name))
    return sorted(found)


def repository_with_default(tmp_path: Path) -> Path:
    repository = tmp_path / "models"
    shutil.copytree(SOURCE, repository / "movielens" / SOURCE.name)
    return repository


def two_workers(tmp_path: Path, repository: Path) -> dict[str, str]:
    return {
        "HYDRAREC_WORKERS": "2",
        "HYDRAREC_MODEL_DIR": str(repository),
        "HYDRAREC_MODEL_POLL_SECONDS": "0.2",
        "PROMETHEUS_MULTIPROC_DIR": str(tmp_path / "metrics"),
    }


def half_sent(service: Service) -> socket.socket:
    """A /predict whose body is half sent (in flight, not answered)."""
    conn = socket.create_connection(("127.0.0.1", int(service.url.rsplit(":", 1)[1])), timeout=30)
    conn.sendall(
        b"POST /predict HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\n"
        + f"Content-Length: {len(BODY)}\r\n\r\n".encode()
        + BODY[: len(BODY) // 2]
    )
    return conn


@pytest.mark.parametrize(
    ("fault", "status"),
    [
        ("os.environ['HYDRAREC_MODEL_DIR'] = '/nonexistent'", 3),  # the lifespan fails: uvicorn 3
        ("os.environ['HYDRAREC_PORT'] = 'eighty'", 1),  # the app factory raises: uvicorn exits 1
    ],
    ids=["model-missing-in-worker", "settings-bad-in-worker"],
)
def test_a_worker_that_cannot_start_fails_the_server(
    tmp_path: Path, fault: str, status: int
) -> None:
    # Given: workers that see a different environment than the supervisor's check did
    hook = tmp_path / "hook"
    hook.mkdir()
    (hook / "sitecustomize.py").write_text(
        f"import os\nif os.environ.get('HYDRAREC_SUPERVISOR_PID'):\n    {fault}\n"
    )
    env = service_env(free_port(), HYDRAREC_WORKERS="2")
    env["PYTHONPATH"] = os.pathsep.join([str(hook), env.get("PYTHONPATH", "")])
    # When
    result = subprocess.run(
        [sys.executable, "-m", "service"], env=env, capture_output=True, text=True, timeout=120
    )
    # Then: the server stops with a non-zero status and says why, instead of restarting workers
    assert result.returncode == 3, (result.returncode, result.stderr[-2000:])
    assert "failed to start" in result.stderr
    assert f"exit status {status}" in result.stderr


def test_a_dead_worker_leaves_no_ghost_series(tmp_path: Path) -> None:
    repository = repository_with_default(tmp_path)
    with running_service(tmp_path, **two_workers(tmp_path, repository)) as service:
        url = service.url
        wait_until(lambda: total(url, "hydrarec_model_loads", result="success") == 2, "start")
        # Given: requests in flight on both workers, then one worker killed outright
        stuck = [half_sent(service) for _ in range(6)]
        wait_until(lambda: total(url, IN_FLIGHT, handler="/predict") == 6, "in flight")
        victim = workers_of(service.process.pid)[0]
        os.kill(victim, signal.SIGKILL)
        wait_until(lambda: total(url, "hydrarec_model_loads", result="success") == 3, "replaced")
        assert victim not in workers_of(service.process.pid)
        # When: the other clients give up mid-body, more do on the new worker, a version arrives
        for conn in stuck:
            conn.close()
        late = [half_sent(service) for _ in range(2)]
        wait_until(lambda: total(url, IN_FLIGHT, handler="/predict") >= 2, "late")
        for conn in late:
            conn.close()
        publish_copy(repository, SOURCE, FIRST + 1)
        wait_until(lambda: total(url, "hydrarec_model_loads", result="success") == 5, "reload")
        # Then: nothing of the dead worker is left, and the ones that left count as 499
        wait_until(lambda: total(url, IN_FLIGHT, handler="/predict") == 0, "ghost gauge")
        served = {labels["version"] for labels, v in samples(url, "hydrarec_model_info") if v == 1}
        assert served == {str(FIRST + 1)}
        predict = {"handler": "/predict", "method": "POST"}
        assert total(url, "hydrarec_http_requests", status="499", **predict) >= 2
        assert total(url, "hydrarec_http_requests", status="5xx", **predict) == 0
        assert not samples(url, "process_resident_memory_bytes"), "per-worker figures leak"


def test_a_version_copied_file_by_file_is_served_by_every_worker(tmp_path: Path) -> None:
    repository = repository_with_default(tmp_path)
    # Given: the next version complete elsewhere, copied in as `cp -p` does: manifest first,
    # modification times kept, one file at a time with pauses the pollers see
    staging = tmp_path / "staging" / "movielens" / str(FIRST + 1)
    shutil.copytree(SOURCE, staging)
    manifest = Manifest.model_validate_json((staging / "manifest.json").read_text())
    write_manifest(staging, manifest.model_copy(update={"version": FIRST + 1}))
    files = sorted(p for p in staging.rglob("*") if p.is_file())
    files.sort(key=lambda p: p.name != "manifest.json")
    with running_service(tmp_path, **two_workers(tmp_path, repository)) as service:
        url = service.url
        wait_until(lambda: total(url, "hydrarec_model_loads", result="success") == 2, "start")
        # When
        target = repository / "movielens" / str(FIRST + 1)
        for path in files:
            (target / path.relative_to(staging)).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(path, target / path.relative_to(staging))
            time.sleep(0.5)
        # Then: seen half-copied and rejected, then served by both workers once complete
        assert total(url, "hydrarec_model_loads", result="failure") >= 2
        wait_until(lambda: total(url, "hydrarec_model_loads", result="success") == 4, "reload")
        version = {"model": "movielens"}
        assert total(url, "hydrarec_model_info", version=str(FIRST + 1), **version) == 1
        assert total(url, "hydrarec_model_info", version=str(FIRST), **version) == 0
        answers = {httpx.get(f"{url}/readyz", timeout=5).json()["version"] for _ in range(20)}
        assert answers == {str(FIRST + 1)}  # a new connection each: both workers asked
        models = httpx.get(f"{url}/v1/models", timeout=5).json()["models"][0]
        assert models["rejected"] == []
