"""The API docs pages work offline: headless Chromium (the Debian package), with every host but
127.0.0.1 unresolvable, renders Swagger UI's operations and ReDoc from the service's own assets,
and its network log shows no connection off the machine. A screenshot of /docs is kept in
build/test-artifacts/."""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx2 as httpx
import pytest

from harness.processes import Service, binary, running_service

pytestmark = pytest.mark.system

ARTIFACTS = Path(__file__).resolve().parents[2] / "build" / "test-artifacts"
KEY = "docs-key-0123456789"


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    folder = tmp_path_factory.mktemp("docs")
    with running_service(folder, HYDRAREC_WORKERS="1", HYDRAREC_API_KEY=KEY) as s:
        yield s


def chromium(folder: Path, url: str, *extra: str) -> tuple[str, list[dict]]:
    """(stdout, network log events) of one headless Chromium run on `url`, every other host
    unresolvable and the browser's own background traffic switched off where it can be."""
    netlog = folder / "net.json"
    done = subprocess.run(
        [
            binary("chromium"),
            "--headless",
            "--no-sandbox",  # root in CI
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            f"--user-data-dir={folder / 'profile'}",
            "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
            f"--log-net-log={netlog}",
            "--virtual-time-budget=20000",
            *extra,
            url,
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    log = json.loads(netlog.read_text())
    names = {v: k for k, v in log["constants"]["logEventTypes"].items()}
    events = [{"type": names.get(e["type"]), **e.get("params", {})} for e in log["events"]]
    return done.stdout, events


def off_machine(events: list[dict]) -> list[str]:
    """Remote addresses of TCP connections that were not to the loopback."""
    remotes = [
        e["remote_address"] for e in events if e["type"] == "TCP_CONNECT" and "remote_address" in e
    ]
    assert remotes, "no TCP connection logged at all: the log is not what this test reads"
    return [r for r in remotes if not r.startswith(("127.", "[::1]"))]


def test_swagger_ui_renders_every_operation_offline(service: Service, tmp_path: Path) -> None:
    dom, events = chromium(tmp_path, f"{service.url}/docs", "--dump-dom")
    for path in ("/predict", "/v1/models", "/v2/models/{name}/infer", "/readyz"):
        assert f'data-path="{path}"' in dom, path  # an operation block Swagger UI rendered
    assert "authorize" in dom  # the API key schemes are offered
    page = [e["url"] for e in events if e.get("initiator") == service.url]
    assert page, "the page loaded nothing"
    assert all(u.startswith(service.url) for u in page), page  # its assets came from the service
    assert off_machine(events) == []
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    shot = tmp_path / "docs.png"
    chromium(tmp_path, f"{service.url}/docs", f"--screenshot={shot}", "--window-size=1280,2000")
    assert shot.stat().st_size > 10_000  # a rendered page, not a blank one
    shutil.copy(shot, ARTIFACTS / "docs.png")


def test_redoc_renders_offline(service: Service, tmp_path: Path) -> None:
    dom, events = chromium(tmp_path, f"{service.url}/redoc", "--dump-dom")
    assert "Every task's output for one user" in dom  # /predict's description, rendered by ReDoc
    assert "fonts.googleapis.com" not in dom
    assert off_machine(events) == []


def test_the_openapi_document_declares_the_key_and_every_predict_answer(service: Service) -> None:
    spec = httpx.get(f"{service.url}/openapi.json", timeout=10).json()
    schemes = spec["components"]["securitySchemes"]
    assert {s["type"] for s in schemes.values()} == {"apiKey", "http"}
    assert any(s.get("name") == "X-API-Key" for s in schemes.values())
    assert any(s.get("scheme") == "bearer" for s in schemes.values())
    predict = spec["paths"]["/predict"]["post"]
    assert {n for r in predict["security"] for n in r} == set(schemes)
    assert {"200", "401", "408", "413", "415", "422", "500", "503"} <= set(predict["responses"])
    reasons = spec["components"]["schemas"]["ErrorBody"]["properties"]["error"]["description"]
    for reason in (
        "invalid_input",
        "too_large",
        "timeout",
        "unauthorized",
        "not_ready",
        "overloaded",
        "internal",
    ):
        assert reason in reasons
    for asset in ("swagger-ui-bundle.js", "swagger-ui.css", "redoc.standalone.js", "favicon.png"):
        assert httpx.get(f"{service.url}/docs-assets/{asset}", timeout=10).status_code == 200
