"""The benchmark's own parts: py-spy's collapsed stacks become the right shares, the ASGI
harness runs the real request path, the peers answer as the service does, a server's process
tree is found whole."""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from bench import asgi
from bench.memory import tree, tree_rss_mib
from bench.peers.model import Model
from bench.profile import top_frames
from harness.processes import REPOSITORY
from service.config import Settings
from service.main import create_app
from service.repository import load_artifact


def test_top_frames_share_samples_by_function_not_line(tmp_path: Path) -> None:
    raw = tmp_path / "raw.txt"
    raw.write_text(
        'process 1:"server";loop (a.py:1);handle (b.py:10);run (ort.py:5) 6\n'
        'process 1:"server";loop (a.py:1);handle (b.py:12) 3\n'
        'process 2:"worker";loop (a.py:2) 1\n'
    )
    frames, total = top_frames(raw)
    assert total == 10
    by_name = {f: (inclusive, own) for f, inclusive, own in frames}
    assert by_name["run (ort.py)"] == pytest.approx((60.0, 60.0))
    assert by_name["handle (b.py)"] == pytest.approx((90.0, 30.0))  # two lines, one function
    assert by_name["loop (a.py)"] == pytest.approx((100.0, 10.0))
    assert [f for f, _, _ in frames][0] == "run (ort.py)"  # ranked by own samples


def bodies() -> list[bytes]:
    """BODIES as a client sends them."""
    return [json.dumps(b).encode() for b in BODIES]


BODIES = [
    {"user_id": "196", "history": ["242", "302", "377"], "candidates": ["51", "346", "474"]},
    {"user_id": "nobody", "history": [], "candidates": ["1", "999999"]},
]


@pytest.fixture
def app(tmp_path: Path) -> Any:
    """The service's ASGI app on the default model, as bench.asgi builds it (its event store in
    the test's folder)."""
    store = f"sqlite:///{tmp_path}/events.db"
    return create_app(Settings(model_dir=REPOSITORY, workers=1, ort_threads=1, store_url=store))


def test_the_asgi_harness_calls_the_real_request_path(app: Any) -> None:
    async def statuses() -> list[int]:
        async with app.router.lifespan_context(app):
            good = [await asgi.call(app, body) for body in bodies()]
            return [*good, await asgi.call(app, b'{"user_id": "196", "candidates": []}')]

    assert asyncio.run(statuses()) == [200, 200, 422]


def test_the_asgi_harness_measures_every_request() -> None:
    figures = asyncio.run(asgi.measure(bodies(), seconds=0.3))
    assert figures["requests_per_second"] > 0
    # a request costs at least its session.run, and the loop cannot be free of CPU
    assert 10 < figures["cpu_us_per_request"] < 1e6


def test_the_peer_model_answers_as_the_service_does(app: Any) -> None:
    """The peers do hydrarec's work: the same scores, the same top items, the same profile."""
    peer = Model(load_artifact(REPOSITORY, "movielens").path)  # the version the service serves
    with TestClient(app) as client:
        for body in BODIES:
            ours = client.post("/predict", json=body).json()
            theirs = peer.predict(body["user_id"], body["history"], body["candidates"])
            assert [i["item_id"] for i in theirs["items"]] == [i["item_id"] for i in ours["items"]]
            for mine, other in zip(ours["items"], theirs["items"], strict=True):
                assert other["score"] == pytest.approx(mine["score"], abs=1e-6)
                assert other["like"] == pytest.approx(mine["like"], abs=1e-6)
            assert theirs["user"]["gender"] == pytest.approx(ours["user"]["gender"], abs=1e-6)


def test_the_bare_asgi_peer_answers_with_the_peer_model(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HYDRAREC_PEER_MODEL", str(load_artifact(REPOSITORY, "movielens").path))
    peer = importlib.reload(importlib.import_module("bench.peers.asgi_app"))
    with TestClient(peer.app) as client:
        assert client.get("/readyz").status_code == 200
        for body in BODIES:
            answer = client.post("/predict", json=body)
            assert answer.headers["content-type"] == "application/json"
            expected = peer.model.predict(body["user_id"], body["history"], body["candidates"])
            assert answer.json() == expected


def test_a_process_tree_includes_grandchildren_in_sessions_of_their_own(tmp_path: Path) -> None:
    """BentoML's workers start new sessions: the tree must still find them (memory, stop)."""
    spawn = tmp_path / "spawn.py"  # argv[1]: how many generations below this one
    spawn.write_text(
        "import subprocess, sys, time\n"
        "if int(sys.argv[1]):\n"
        "    subprocess.Popen([sys.executable, __file__, str(int(sys.argv[1]) - 1)],"
        " start_new_session=True)\n"
        "time.sleep(30)\n"
    )
    parent = subprocess.Popen([sys.executable, str(spawn), "2"])
    try:
        deadline = time.monotonic() + 10
        while len(members := tree(parent.pid)) < 3 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert members[0] == parent.pid
        assert len(members) == 3  # the parent, the child, its child in a session of its own
        mib, n = tree_rss_mib(parent.pid)
        assert n == 3
        assert mib > 3 * 5  # three Python interpreters, each several MiB resident
    finally:
        for pid in reversed(tree(parent.pid)):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        parent.wait()


def test_a_grown_catalogue_serves_recommend_mode_over_every_item(tmp_path: Path) -> None:
    """bench/recommend.py's synthetic catalogue: the default model with items added through
    `catalogue`'s publishing path; the new items are retrievable, the old ones score as before."""
    from bench.recommend import grown
    from service.metrics import Metrics
    from service.predictor import Predictor
    from service.schemas import PredictRequest

    repository = grown(tmp_path / "models", 500)

    artifact = load_artifact(repository, "movielens")
    default = load_artifact(REPOSITORY, "movielens")
    assert artifact.manifest.version == 2
    added = artifact.read_vocab("item_id")[default.manifest.vocabularies["item_id"].size :]
    assert added == [f"synthetic-{i}" for i in range(500)]
    predictor = Predictor.load(Settings(model_dir=repository, ort_threads=1, retrieve=1000))
    metrics = Metrics()
    metrics.start_model(predictor.ref, [t.name for t in artifact.manifest.tasks])
    answer = predictor.recommend(PredictRequest(user_id="196", top_k=1000), metrics)
    assert answer["retrieved"] == 1000
    assert {i["item_id"] for i in answer["items"]} & set(added)


def test_the_explain_bench_sends_the_same_requests_plain_and_explained(
    tmp_path: Path, app: Any
) -> None:
    from bench.explain import MODES, N_HISTORY
    from bench.explain import bodies as explain_bodies

    files = explain_bodies(tmp_path, None)
    for mode in MODES:
        plain = [json.loads(line) for line in files[(mode, False)].read_text().splitlines()]
        explained = [json.loads(line) for line in files[(mode, True)].read_text().splitlines()]
        assert [b | {"explain": True} for b in plain] == explained
        assert all(len(b["history"]) == N_HISTORY for b in plain)
        assert all(("candidates" in b) == (mode == "candidates") for b in plain)

    async def statuses() -> list[int]:
        async with app.router.lifespan_context(app):
            lines = files[("recommend", True)].read_text().splitlines()[:3]
            return [await asgi.call(app, line.encode()) for line in lines]

    assert asyncio.run(statuses()) == [200, 200, 200]
