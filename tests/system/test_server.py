"""The real server: `python -m service` (uvicorn) on a free 127.0.0.1 port, over real HTTP."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import httpx2 as httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from harness.processes import (
    REPOSITORY,
    START_TIMEOUT_S,
    Service,
    free_port,
    running_service,
    service_env,
)
from service.repository import load_artifact

pytestmark = pytest.mark.system

N_WORKERS = 2


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    """`python -m service` with two workers (Prometheus multiprocess mode)."""
    metrics_dir = tmp_path_factory.mktemp("metrics")
    stale_run = (  # a previous run's counts, which the server must wipe before its workers start
        "from service.metrics import Metrics; "
        "Metrics().requests.labels('/predict', 'POST', '2xx', 'movielens', '1').inc(5)"
    )
    subprocess.run(
        [sys.executable, "-c", stale_run],
        env=os.environ | {"PROMETHEUS_MULTIPROC_DIR": str(metrics_dir)},
        check=True,
    )
    assert list(metrics_dir.glob("counter_*.db"))
    with running_service(
        metrics_dir,
        HYDRAREC_WORKERS=str(N_WORKERS),
        PROMETHEUS_MULTIPROC_DIR=str(metrics_dir),
    ) as service:
        yield service


N_GOOD, N_BAD = 40, 7


def scraped(url: str, family: str, **labels: str) -> float:
    """The sum of the family's samples that carry these labels (and any others)."""
    text = httpx.get(f"{url}/metrics", timeout=10).text
    families = {f.name: f for f in text_string_to_metric_families(text)}
    found = [s.value for s in families[family].samples if labels.items() <= s.labels.items()]
    assert found, (family, labels)
    return sum(found)


def predict_count(url: str, status: str) -> float:
    return scraped(url, "hydrarec_http_requests", handler="/predict", method="POST", status=status)


def test_metrics_are_the_sum_over_fresh_workers(
    server: Service,
) -> None:
    url = server.url
    deadline = time.monotonic() + START_TIMEOUT_S  # /readyz answers once the first one is up
    while scraped(url, "hydrarec_model_loads", result="success") < N_WORKERS:
        assert time.monotonic() < deadline, "not every worker loaded the model"
        time.sleep(0.1)
    assert scraped(url, "hydrarec_model_loads", result="success") == N_WORKERS
    version = str(load_artifact(REPOSITORY, "movielens").manifest.version)
    assert scraped(url, "hydrarec_model_info", model="movielens", version=version) == 1
    assert predict_count(url, "2xx") == 0, "counts of a previous run were wiped"


def test_predict_over_http_counted_across_workers(
    server: Service,
) -> None:
    url = server.url
    body = {"user_id": "196", "history": ["242", "302"], "candidates": ["1", "50", "181"]}
    for _ in range(N_GOOD):  # a new connection each, so both workers answer some
        response = httpx.post(f"{url}/predict", json=body, timeout=10)
        assert response.status_code == 200
        assert set(response.json()["user"]) == {"gender", "age", "occupation"}
    for _ in range(N_BAD):
        bad = httpx.post(f"{url}/predict", json={"user_id": "1", "candidates": []}, timeout=10)
        assert bad.status_code == 422
    assert predict_count(url, "2xx") == N_GOOD
    assert predict_count(url, "4xx") == N_BAD


ACCESS_LINE = '"POST /predict HTTP/1.1" 200'


def test_requests_are_not_logged_by_default(server: Service) -> None:
    body = {"user_id": "196", "candidates": ["1", "50"]}
    assert httpx.post(f"{server.url}/predict", json=body, timeout=10).status_code == 200
    assert "Application startup complete" in server.output()
    assert ACCESS_LINE not in server.output()


def test_the_access_log_is_a_setting(tmp_path: Path) -> None:
    with running_service(tmp_path, HYDRAREC_ACCESS_LOG="true") as service:
        body = {"user_id": "196", "candidates": ["1", "50"]}
        assert httpx.post(f"{service.url}/predict", json=body, timeout=10).status_code == 200
        deadline = time.monotonic() + 10
        while ACCESS_LINE not in service.output():
            assert time.monotonic() < deadline, "no access log line"
            time.sleep(0.1)


def test_sigterm_shuts_down_cleanly(server: Service) -> None:
    process, url = server.process, server.url
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=30) == 0
    assert "Application shutdown complete" in server.output()
    with pytest.raises(httpx.TransportError):
        httpx.get(f"{url}/healthz", timeout=1.0)


def copy_default(tmp_path: Path) -> Path:
    """The default model's highest version alone, in a repository of its own."""
    source = load_artifact(REPOSITORY, "movielens").path
    target = tmp_path / "models" / "movielens" / source.name
    shutil.copytree(source, target)
    return target


def tamper_hash(folder: Path) -> None:
    with (folder / "model.onnx").open("ab") as f:
        f.write(b"\0")


def tamper_schema(folder: Path) -> None:
    path = folder / "manifest.json"
    path.write_text(json.dumps(json.loads(path.read_text()) | {"schema_version": 1}))


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (lambda folder: shutil.rmtree(folder.parent), "no model versions"),
        (tamper_hash, "sha256 of model.onnx does not match"),
        (tamper_schema, "schema_version 1 is not supported"),
    ],
    ids=["missing-folder", "hash-mismatch", "schema-version"],
)
@pytest.mark.parametrize(
    "command",
    [["-m", "service"], ["-m", "uvicorn", "service.main:create_app", "--factory"]],
    ids=["python-m-service", "plain-uvicorn"],
)
def test_a_bad_artifact_never_serves(
    tmp_path: Path, damage: object, message: str, command: list[str]
) -> None:
    folder = copy_default(tmp_path)
    damage(folder)  # type: ignore[operator]
    port = free_port()
    env = service_env(port, HYDRAREC_MODEL_DIR=str(tmp_path / "models"))
    result = subprocess.run(
        [sys.executable, *command, "--port", str(port)]
        if "uvicorn" in command
        else [sys.executable, *command],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode != 0
    assert message in result.stderr


def test_bad_settings_are_named_before_start() -> None:
    env = service_env(free_port(), HYDRAREC_MAX_CANDIDATES="lots")
    result = subprocess.run(
        [sys.executable, "-m", "service"], env=env, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 2
    assert result.stderr.startswith("error: invalid settings: HYDRAREC_MAX_CANDIDATES")


def test_several_workers_without_a_metrics_folder_get_a_temporary_one(tmp_path: Path) -> None:
    def metrics_folders() -> set[Path]:
        return set(Path(tempfile.gettempdir()).glob("hydrarec-metrics-*"))

    before = metrics_folders()
    with running_service(tmp_path, HYDRAREC_WORKERS="2") as service:
        assert len(metrics_folders() - before) == 1
        deadline = time.monotonic() + START_TIMEOUT_S
        while scraped(service.url, "hydrarec_model_loads", result="success") < 2:
            assert time.monotonic() < deadline, "the workers' metrics are not summed"
            time.sleep(0.1)
        service.process.send_signal(signal.SIGTERM)
        assert service.process.wait(timeout=30) == 0
    assert metrics_folders() - before == set(), "the temporary metrics folder was left behind"


def test_workers_end_with_a_killed_supervisor(tmp_path: Path) -> None:
    with running_service(tmp_path, HYDRAREC_WORKERS="2") as service:
        deadline = time.monotonic() + START_TIMEOUT_S  # both workers up
        while scraped(service.url, "hydrarec_model_loads", result="success") < 2:
            assert time.monotonic() < deadline
            time.sleep(0.1)
        pid = service.process.pid
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
        workers = [
            int(c) for c in children if "spawn_main" in Path(f"/proc/{c}/cmdline").read_text()
        ]
        assert len(workers) == 2
        service.process.kill()  # SIGKILL: uvicorn cannot stop its workers itself
        service.process.wait()
        deadline = time.monotonic() + 20
        while any(Path(f"/proc/{w}").exists() for w in workers):
            assert time.monotonic() < deadline, "workers outlived their supervisor"
            time.sleep(0.1)


def _sockets_of(pid: int) -> set[int]:
    """Inodes of the sockets process `pid` holds."""
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        target = os.readlink(fd) if fd.is_symlink() else ""
        if target.startswith("socket:["):
            inodes.add(int(target[8:-1]))
    return inodes


def _tcp_inodes(port: int, state: str) -> set[int]:
    """Inodes of the IPv4 TCP sockets on local `port` in `state` (0A listen, 01 established)."""
    inodes = set()
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        if int(fields[1].split(":")[1], 16) == port and fields[3] == state:
            inodes.add(int(fields[9]))
    return inodes


def test_each_worker_listens_on_its_own_socket_and_gets_connections(tmp_path: Path) -> None:
    """One SO_REUSEPORT socket per worker, so the kernel spreads connections over the workers
    instead of the first one awake taking most of them (32 connections: a worker with fewer
    than 4 of them has probability ~1e-6)."""
    with running_service(tmp_path, HYDRAREC_WORKERS="2") as service:
        deadline = time.monotonic() + START_TIMEOUT_S
        while scraped(service.url, "hydrarec_model_loads", result="success") < 2:
            assert time.monotonic() < deadline
            time.sleep(0.1)
        port = int(service.url.rsplit(":", 1)[1])
        pid = service.process.pid
        workers = [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
        workers = [w for w in workers if "spawn_main" in Path(f"/proc/{w}/cmdline").read_text()]
        listening = [_sockets_of(w) & _tcp_inodes(port, "0A") for w in workers]
        assert [len(s) for s in listening] == [1, 1]
        assert listening[0] != listening[1]

        clients = [socket.create_connection(("127.0.0.1", port)) for _ in range(32)]
        try:
            deadline = time.monotonic() + 10
            while True:
                accepted = [len(_sockets_of(w) & _tcp_inodes(port, "01")) for w in workers]
                if sum(accepted) == 32 or time.monotonic() > deadline:
                    break
                time.sleep(0.05)
            assert sum(accepted) == 32
            assert min(accepted) >= 4, accepted
        finally:
            for client in clients:
                client.close()


def test_a_port_in_use_is_refused_before_start() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = subprocess.run(
            [sys.executable, "-m", "service"],
            env=service_env(port, HYDRAREC_WORKERS="2"),
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert result.returncode == 2
    assert result.stderr.startswith(f"error: cannot listen on 127.0.0.1:{port}: ")


def test_a_bad_newest_version_is_skipped_at_start_unless_pinned(tmp_path: Path) -> None:
    # Given: the default model's two newest versions, the newest damaged
    versions = sorted(int(p.name) for p in (REPOSITORY / "movielens").iterdir() if p.name.isdigit())
    older, newest = versions[-2:]
    for version in (older, newest):
        shutil.copytree(
            REPOSITORY / "movielens" / str(version),
            tmp_path / "models" / "movielens" / str(version),
        )
    tamper_hash(tmp_path / "models" / "movielens" / str(newest))
    settings = {"HYDRAREC_MODEL_DIR": str(tmp_path / "models"), "HYDRAREC_WORKERS": "2"}
    # When / Then: the older one serves, the newer one is named as rejected
    with running_service(tmp_path, **settings) as service:
        assert httpx.get(f"{service.url}/readyz", timeout=5).json()["version"] == str(older)
        (rejected,) = httpx.get(f"{service.url}/v1/models", timeout=5).json()["models"][0][
            "rejected"
        ]
        assert rejected["version"] == str(newest)
        assert f"rejected version {newest}" in service.output()
    pinned = subprocess.run(
        [sys.executable, "-m", "service"],
        env=service_env(free_port(), **settings, HYDRAREC_MODEL_VERSION=str(newest)),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert pinned.returncode == 2
    assert pinned.stderr.startswith("error: ")
    assert "sha256 of model.onnx does not match" in pinned.stderr
