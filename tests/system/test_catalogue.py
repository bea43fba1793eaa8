"""New items reach a running service: `catalogue` publishes, the service hot-reloads, the new
items are scored from their content and the known ones exactly as before."""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
from pathlib import Path

import httpx2 as httpx
import pytest

from harness.processes import running_service

pytestmark = pytest.mark.system
RELOAD_TIMEOUT_S = 30.0


def test_catalogue_round_trip_through_the_real_service(trained, tmp_path: Path) -> None:
    # Given the service on version 1 of a model with item content
    _, source = trained
    repository = tmp_path / "models"
    shutil.copytree(source, repository)
    body = {
        "user_id": "u3",
        "history": ["i1", "i5", "i9", "new-a"],
        "candidates": ["i2", "i4", "i8", "new-a", "new-b"],
        "top_k": 5,
    }
    (tmp_path / "new.csv").write_text(
        "item_id,genres,year\nnew-a,f0+|f1+|f2+|f3+,2001\nnew-b,f0-|f1-|f2-|f3-,1980\n"
    )
    with running_service(
        tmp_path,
        HYDRAREC_MODEL_DIR=str(repository),
        HYDRAREC_MODEL_NAME="synth",
        HYDRAREC_MODEL_POLL_SECONDS="1",
    ) as service:
        known = {"user_id": "u3", "history": ["i1", "i5", "i9"], "candidates": ["i2", "i4"]}
        known_before = httpx.post(f"{service.url}/predict", json=known).json()
        before = httpx.post(f"{service.url}/predict", json=body).json()
        assert before["unknown"] == {
            "user_id": False,
            "history": ["new-a"],
            "candidates": ["new-a", "new-b"],
        }
        unknown = [i for i in before["items"] if i["item_id"].startswith("new")]
        assert unknown[0]["click"] == unknown[1]["click"], "both are the one unknown item"

        # When the new items are published
        subprocess.run(
            [
                sys.executable,
                "-m",
                "training",
                "catalogue",
                "--model",
                str(repository / "synth" / "1"),
                "--items",
                str(tmp_path / "new.csv"),
            ],
            check=True,
            capture_output=True,
        )
        after = before
        deadline = time.monotonic() + RELOAD_TIMEOUT_S
        while after["model"]["version"] == "1" and time.monotonic() < deadline:
            time.sleep(0.2)
            after = httpx.post(f"{service.url}/predict", json=body).json()
        time.sleep(2.5)  # every worker polls each second: all of them have swapped by now
        known_after = [httpx.post(f"{service.url}/predict", json=known).json() for _ in range(6)]

    # Then every worker serves version 2, which knows them and scores each from its content
    assert after["model"] == {"name": "synth", "version": "2"}
    assert after["unknown"] == {"user_id": False, "history": [], "candidates": []}
    new = {i["item_id"]: i for i in after["items"] if i["item_id"].startswith("new")}
    assert new["new-a"]["click"] != new["new-b"]["click"]
    assert new["new-a"]["click"] != unknown[0]["click"]
    # known items, with a history of known items, score exactly as before on every worker
    for answer in known_after:
        assert answer["model"]["version"] == "2"
        for item_before, item_after in zip(known_before["items"], answer["items"], strict=True):
            assert item_after["item_id"] == item_before["item_id"]
            assert item_after["click"] == pytest.approx(item_before["click"], abs=1e-6)
            assert item_after["like"] == pytest.approx(item_before["like"], abs=1e-6)
