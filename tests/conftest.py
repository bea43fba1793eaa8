"""Shared fixtures: small synthetic configs, one trained artifact per test session, and the event
stores (an SQLite file, a redis-server started once per session)."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
import redis

from harness.redis_server import RedisServer, running_redis
from training.config import Config
from training.config_file import load_config

if TYPE_CHECKING:
    from training.pipeline.run import RunResult

TINY = [
    "synthetic.n_users=200",
    "synthetic.n_items=120",
    "synthetic.n_interactions=30",
    "network.d_embedding=16",
    "network.d_hidden=16",
    "network.d_tower=8",
    "network.history_length=10",
    "optim.epochs=1",
    "eval.n_rank_negatives=50",
    "eval.n_cold_rank_negatives=10",
]


def tiny_config(*overrides: str) -> Config:
    """A config small enough to train in seconds on synthetic data."""
    return load_config(None, [*TINY, *overrides])


# The synthetic items' planted content (training.data.synthetic).
CONTENT = (
    '--features=[{"column": "genres", "kind": "multi_categorical"},'
    ' {"column": "year", "kind": "numeric"}]'
)


def learning_config(*overrides: str) -> Config:
    """Synthetic data with planted structure (item content included), a model big enough to find
    it in a few epochs.

    Every task weighs 1 here: the planted profile is learnable in a few epochs only with a
    full-strength signal (the MovieLens default damps user tasks over 100k events).
    """
    cfg = load_config(
        None,
        [
            CONTENT,
            "name=synth",
            "synthetic.n_users=500",
            "synthetic.n_items=200",
            "network.d_embedding=32",
            "network.d_hidden=32",
            "network.d_tower=16",
            "network.history_length=20",
            "optim.epochs=6",
            "optim.user_task_events=8",
            "optim.batch_size=64",
            "optim.lr=0.003",
            "eval.n_rank_negatives=50",
            "eval.n_cold_rank_negatives=20",
            *overrides,
        ],
    )
    return dataclasses.replace(cfg, tasks=[t.model_copy(update={"weight": 1.0}) for t in cfg.tasks])


@pytest.fixture(scope="session")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[RunResult | None, Path]:
    """(RunResult, repository) of a short synthetic training run, exported and published."""
    from training.pipeline.run import train_and_export

    root = tmp_path_factory.mktemp("trained")
    cfg = learning_config()
    result = train_and_export(cfg, "synthetic", root / "models", root / "reports", progress=False)
    return result, root / "models"


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    """A valid data folder in the documented CSV format (edit files to break it)."""
    (tmp_path / "interactions.csv").write_text(
        "user_id,item_id,timestamp,rating\n"
        + "".join(
            f"u{u},i{(u + k) % 6},{1000 + k},{1 + (u + k) % 5}\n"
            for u in range(4)
            for k in range(5)
        )
    )
    (tmp_path / "users.csv").write_text(
        "user_id,gender,age,occupation\nu0,F,23,student\nu1,M,,artist\nu2,,45,student\nu3,M,61,\n"
    )
    (tmp_path / "items.csv").write_text(
        "item_id,title,genres\n" + "".join(f"i{i},Item {i},Drama\n" for i in range(6))
    )
    return tmp_path


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """A real redis-server for the session (appendonly, appendfsync always)."""
    with running_redis(tmp_path_factory.mktemp("redis")) as server:
        yield server


@pytest.fixture(params=["sqlite", "redis"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A fresh event store's URL, once per backend: an SQLite file in the test's folder, or the
    session's redis-server emptied."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/state/events.db"
    server: RedisServer = request.getfixturevalue("redis_server")
    client = redis.Redis.from_url(server.url)
    client.flushdb()
    client.close()
    return server.url
