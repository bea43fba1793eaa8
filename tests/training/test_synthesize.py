"""`python -m training synthesize`: the planted synthetic log as Parquet shards, read by --data."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from training.config_file import load_config
from training.data.directory import read_directory
from training.data.raw import DataError
from training.data.synthesize import Size, synthesize
from training.data.tables import parse_tables

SMALL = Size(users=4500, items=800, interactions=45_000, shard_rows=10_000)


@pytest.fixture(scope="module")
def log(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("synth") / "log"
    synthesize(SMALL, out, progress=False)
    return out


def test_the_shards_are_the_documented_tables(log: Path) -> None:
    shards = sorted((log / "interactions").glob("*.parquet"))
    assert len(shards) >= 3  # 45,000 rows in shards of about 10,000 (whole chunks of users)
    assert len(sorted((log / "users").glob("*.parquet"))) == 3  # chunks of 2,000 users
    schema = pq.read_schema(shards[0])
    assert {f.name: str(f.type) for f in schema} == {
        "user_id": "int64",
        "item_id": "int64",
        "timestamp": "int64",
        "rating": "int64",
    }
    tables = parse_tables(read_directory(log), load_config(None).tasks)  # every MovieLens task
    assert len(tables.users) == SMALL.users
    assert len(tables.items) == SMALL.items
    assert abs(len(tables.interactions) - SMALL.interactions) < 0.05 * SMALL.interactions


def test_the_planted_structure_is_there(log: Path) -> None:
    tables = parse_tables(read_directory(log), load_config(None).tasks)
    inter = tables.interactions
    # popularity drives both how often an item is picked and its year
    counts = inter["item_id"].value_counts()
    items = tables.items.set_index("item_id")
    years = items.loc[counts.index, "year"].replace("", np.nan).astype(float)
    assert np.corrcoef(counts.to_numpy()[years.notna()], years.dropna())[0, 1] > 0.3
    # taste drives the picks: a user's items lean to one sign of factor 0 (their genre f0+ or
    # f0-) far more than the same picks shuffled across users do
    plus = items.loc[inter["item_id"], "genres"].str.contains("f0\\+").to_numpy()
    lean = inter.assign(plus=plus).groupby("user_id")["plus"].mean().sub(0.5).abs().mean()
    shuffled = np.random.default_rng(0).permutation(plus)
    control = inter.assign(plus=shuffled).groupby("user_id")["plus"].mean().sub(0.5).abs().mean()
    assert lean > 1.5 * control, (lean, control)  # 0.26 against 0.13
    assert set(tables.users["gender"]) == {"F", "M", ""}


def test_sizes_that_cannot_make_a_log_and_used_folders_are_refused(log: Path) -> None:
    with pytest.raises(DataError, match="already holds tables"):
        synthesize(SMALL, log, progress=False)
    with pytest.raises(DataError, match="items >= 10"):
        synthesize(Size(users=10, items=3, interactions=100), log.parent / "x", progress=False)


def test_the_command_writes_a_log_that_trains(tmp_path: Path) -> None:
    out = tmp_path / "log"
    made = subprocess.run(
        [
            sys.executable,
            "-m",
            "training",
            "synthesize",
            "--users",
            "300",
            "--items",
            "100",
            "--interactions",
            "6000",
            "--out",
            str(out),
            "--quiet",
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert made.returncode == 0, made.stderr
    assert "interactions: " in made.stdout
    trained = subprocess.run(
        [
            sys.executable,
            "-m",
            "training",
            "train",
            "--data",
            str(out),
            "--name",
            "synth",
            "--quiet",
            "--optim.epochs=1",
            "--network.d_embedding=8",
            "--network.d_hidden=8",
            "--network.d_tower=4",
            "--network.history_length=10",
            "--eval.n_rank_negatives=20",
            "--eval.n_cold_rank_negatives=10",
        ],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=tmp_path,
    )
    assert trained.returncode == 0, trained.stderr[-2000:]
    assert "artifact: models/synth/1" in trained.stdout
