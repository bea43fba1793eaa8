"""`python -m training events export`: the service's event log (both real stores) as a data
folder that training reads; with a base, the old tables first and completed with the new ids;
bad input is one clear line."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from eventstore import Event, open_store
from harness.processes import free_port
from harness.redis_server import running_redis
from training.config_file import load_config
from training.data.events_export import export_events
from training.data.sources import load_tables

EVENTS = [
    Event("u0", "i3", 2000.9, 5.0, "a"),
    Event("new user", "new item", 2001.0),
    Event("u1", "new item", 1999.5, 2.0),
]


def stored(url: str) -> str:
    store = open_store(url)
    store.add(EVENTS)
    store.close()
    return url


def table(folder: Path, name: str) -> pd.DataFrame:
    return pd.read_parquet(folder / f"{name}.parquet")


def cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "training", "events", "export", *args, "--quiet"],
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=300,
    )


def test_the_log_alone_is_a_folder_of_the_three_tables(tmp_path: Path) -> None:
    counts = export_events(stored(f"sqlite:///{tmp_path}/e.db"), tmp_path / "out", progress=False)
    assert counts == {"events": 3, "interactions": 3, "users": 3, "items": 2}
    interactions = table(tmp_path / "out", "interactions")
    assert interactions.to_dict("records") == [  # in the order accepted, whole seconds
        {"user_id": "u0", "item_id": "i3", "timestamp": "2000", "rating": "5.0"},
        {"user_id": "new user", "item_id": "new item", "timestamp": "2001", "rating": ""},
        {"user_id": "u1", "item_id": "new item", "timestamp": "1999", "rating": "2.0"},
    ]
    assert sorted(table(tmp_path / "out", "users")["user_id"]) == ["new user", "u0", "u1"]
    assert sorted(table(tmp_path / "out", "items")["item_id"]) == ["i3", "new item"]


def test_with_a_base_the_old_tables_come_first_and_gain_the_new_ids(
    data_dir: Path, tmp_path: Path
) -> None:
    url = stored(f"sqlite:///{tmp_path}/e.db")
    out = tmp_path / "out"
    export_events(url, out, base=str(data_dir), progress=False)
    base = pd.read_csv(data_dir / "interactions.csv", dtype=str)
    interactions = table(out, "interactions")
    assert len(interactions) == len(base) + 3
    pd.testing.assert_frame_equal(interactions.iloc[: len(base)], base)
    users = table(out, "users")
    assert list(users["user_id"]) == ["u0", "u1", "u2", "u3", "new user"]
    assert users.iloc[-1].to_dict() == {
        "user_id": "new user",
        "gender": "",
        "age": "",
        "occupation": "",
    }
    assert list(table(out, "items")["item_id"])[-1] == "new item"
    cfg = load_config(None, [])
    tables = load_tables(str(out), cfg.tasks)  # validated as training reads it
    assert len(tables.interactions) == len(base) + 3
    assert tables.interactions["timestamp"].dtype == "int64"


def test_the_redis_log_exports_the_same(tmp_path: Path) -> None:
    with running_redis(tmp_path / "redis") as server:
        export_events(stored(server.url), tmp_path / "redis-out", progress=False)
    export_events(stored(f"sqlite:///{tmp_path}/e.db"), tmp_path / "sqlite-out", progress=False)
    for name in ("interactions", "users", "items"):
        pd.testing.assert_frame_equal(
            table(tmp_path / "redis-out", name), table(tmp_path / "sqlite-out", name)
        )


def test_the_command_says_what_it_wrote_and_refuses_bad_input(
    data_dir: Path, tmp_path: Path
) -> None:
    url = stored(f"sqlite:///{tmp_path}/e.db")
    done = cli("--store", url, "--out", "out", "--base", str(data_dir), cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "3 events exported; 23 interactions, 5 users, 7 items in out" in done.stdout
    refusals = {
        "not an empty folder": ("--store", url, "--out", "out"),
        "a store URL is sqlite:///PATH or redis://HOST:PORT/DB": (
            "--store",
            "postgres://x",
            "--out",
            "o2",
        ),
        "the store holds no events": ("--store", f"sqlite:///{tmp_path}/empty.db", "--out", "o3"),
        "cannot read the event log": (
            "--store",
            f"redis://127.0.0.1:{free_port()}/0",
            "--out",
            "o4",
        ),
        "neither 'movielens', 'synthetic' nor a folder": (
            "--store",
            url,
            "--out",
            "o5",
            "--base",
            "nowhere",
        ),
    }
    for message, args in refusals.items():
        refused = cli(*args, cwd=tmp_path)
        assert refused.returncode == 2, (message, refused.stderr)
        assert refused.stderr.startswith("error: "), refused.stderr
        assert message in refused.stderr, refused.stderr
        assert "Traceback" not in refused.stderr


@pytest.mark.parametrize("flag", ["--store", "--out"])
def test_the_store_and_the_folder_are_required(tmp_path: Path, flag: str) -> None:
    args = {"--store": "sqlite:///e.db", "--out": "out"}
    del args[flag]
    refused = cli(*[part for pair in args.items() for part in pair], cwd=tmp_path)
    assert refused.returncode == 2
    assert f"the following arguments are required: {flag}" in refused.stderr
