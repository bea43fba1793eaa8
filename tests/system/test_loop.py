"""The loop closes, on real processes: events posted to the running service (its SQLite store)
-> `python -m training events export --base` -> `python -m training train` publishes the next
version -> the service hot-reloads it -> the new version recommends the planted items, which
the first version did not know, to a user whose stored history holds some of them."""

from __future__ import annotations

import shutil
import time
from pathlib import Path
from typing import Any

import httpx2 as httpx
import pytest

from harness.processes import running_service
from harness.training import LEARNING, training_cli
from tests.conftest import CONTENT, learning_config
from training.data.sources import raw_tables

pytestmark = pytest.mark.system
RELOAD_TIMEOUT_S = 30.0
PLANTED = [f"planted-{k}" for k in range(8)]  # new items: a taste v1 has never seen
FANS = [f"u{u}" for u in range(0, 500, 4)]  # 125 known users who share it
PROBE = "u1"  # not a fan: touches three planted items, the other five should follow
START = 1_700_000_000  # after every synthetic timestamp: the events are the latest


def fan_events() -> list[dict[str, Any]]:
    events = []
    for j, user in enumerate(FANS):
        for k in range(5):  # five of the eight planted items, a different five per fan
            item = PLANTED[(j + k) % len(PLANTED)]
            events.append(
                {"user_id": user, "item_id": item, "timestamp": START + 10 * j + k, "rating": 5}
            )
    return events


def recommend(url: str) -> Any:
    answer = httpx.post(f"{url}/predict", json={"user_id": PROBE, "top_k": 10}, timeout=10)
    assert answer.status_code == 200, answer.text
    return answer.json()


def test_events_become_the_next_version_that_recommends_the_planted_taste(
    trained: Any, tmp_path: Path
) -> None:
    # Given the service on version 1, trained on the synthetic log written as a data folder
    _, source = trained
    repository = tmp_path / "models"
    shutil.copytree(source, repository)
    base = tmp_path / "base"
    base.mkdir()
    for name, table in raw_tables("synthetic", learning_config().synthetic).items():
        table.frame.to_csv(base / f"{name}.csv", index=False)
    store = f"sqlite:///{tmp_path}/state/events.db"
    with running_service(
        tmp_path,
        HYDRAREC_MODEL_DIR=str(repository),
        HYDRAREC_MODEL_NAME="synth",
        HYDRAREC_MODEL_POLL_SECONDS="1",
        HYDRAREC_STORE_URL=store,
    ) as service:
        # When users' events reach it, a fan-like taste among them
        events = fan_events()
        probe = [
            {"user_id": PROBE, "item_id": item, "timestamp": START + 5_000 + i, "rating": 5}
            for i, item in enumerate(PLANTED[:3])
        ]
        for start in range(0, len(events), 100):
            posted = httpx.post(
                f"{service.url}/events", json={"events": events[start : start + 100]}
            )
            assert posted.status_code == 200, posted.text
        assert httpx.post(f"{service.url}/events", json={"events": probe}).status_code == 200
        before = recommend(service.url)

        # and the log is exported onto the base and trained on
        exported = training_cli(
            "events", "export", "--store", store, "--out", str(tmp_path / "next"),
            "--base", str(base), "--quiet",
        )  # fmt: skip
        assert exported.returncode == 0, exported.stderr
        flags = [f for f in LEARNING if not f.startswith("--synthetic.")]
        training = training_cli(
            "train", "--data", str(tmp_path / "next"), "--name", "synth",
            "--out", str(repository), "--reports", str(tmp_path / "reports"), "--quiet",
            CONTENT, *flags,
        )  # fmt: skip
        assert training.returncode == 0, training.stderr
        after = before
        deadline = time.monotonic() + RELOAD_TIMEOUT_S
        while after["model"]["version"] == "1" and time.monotonic() < deadline:
            time.sleep(0.2)
            after = recommend(service.url)

    # Then version 1 could not recommend a planted item (it did not know them); version 2,
    # hot-reloaded, recommends most of the five the probe has not touched
    assert f"{len(events) + 3:,} events exported" in exported.stdout
    assert before["model"]["version"] == "1"
    assert before["history_source"] == "store"
    assert before["unknown"]["history"] == PLANTED[:3]
    assert not [i for i in before["items"] if i["item_id"].startswith("planted")]
    assert after["model"] == {"name": "synth", "version": "2"}
    assert after["unknown"]["history"] == []
    recommended = [i["item_id"] for i in after["items"]]
    assert not set(recommended) & set(PLANTED[:3])  # touched: left out
    assert len(set(recommended) & set(PLANTED[3:])) >= 3, recommended
