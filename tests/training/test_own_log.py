"""A user's own log as the README shows it: clicks only, typed Parquet, ids-only side tables."""

from __future__ import annotations

import random
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from service.repository import load_artifact

ROOT = Path(__file__).resolve().parents[2]
SMALL = [
    "--network.d_embedding=8",
    "--network.d_hidden=8",
    "--network.d_tower=4",
    "--network.history_length=10",
    "--network.encoder_length=5",
    "--optim.epochs=1",
    "--eval.n_rank_negatives=5",
    "--eval.k=1",
    "--eval.n_click_negatives=1",
    "--eval.n_cold_rank_negatives=5",
]


@pytest.fixture
def clicks_log(tmp_path: Path) -> Path:
    """interactions.parquet (int64 ids, a datetime column), users and items with ids only."""
    rng = random.Random(3)
    rows = [(u, rng.randrange(60), 1_700_000_000 + 3600 * k) for u in range(80) for k in range(12)]
    folder = tmp_path / "log"
    folder.mkdir()
    pd.DataFrame(
        {
            "user_id": np.array([r[0] for r in rows], dtype=np.int64),
            "item_id": np.array([r[1] for r in rows], dtype=np.int64),
            "timestamp": pd.to_datetime([r[2] for r in rows], unit="s", utc=True),
        }
    ).to_parquet(folder / "interactions.parquet")
    pd.DataFrame({"user_id": np.arange(80, dtype=np.int64)}).to_parquet(folder / "users.parquet")
    pd.DataFrame({"item_id": np.arange(60, dtype=np.int64)}).to_parquet(folder / "items.parquet")
    return folder


def train(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "training", "train", "--quiet", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=600,
    )


def test_a_clicks_only_log_trains_with_the_shipped_config(clicks_log: Path, tmp_path: Path) -> None:
    config = str(ROOT / "configs" / "clicks.toml")
    result = train("--config", config, "--data", str(clicks_log), *SMALL, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "artifact: models/clicks/1" in result.stdout
    manifest = load_artifact(tmp_path / "models", "clicks").manifest
    assert [t.name for t in manifest.tasks] == ["click"]
    assert manifest.vocabularies["user_id"].size == 80  # int64 ids read as '0'..'79'
    assert not (tmp_path / "models" / "movielens").exists()


def test_the_name_flag_names_the_model(clicks_log: Path, tmp_path: Path) -> None:
    config = str(ROOT / "configs" / "clicks.toml")
    args = ["--config", config, "--data", str(clicks_log), "--name", "shop", *SMALL]
    result = train(*args, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert load_artifact(tmp_path / "models", "shop").manifest.name == "shop"


def test_a_data_folder_needs_a_name_and_the_columns_its_tasks_read(
    clicks_log: Path, tmp_path: Path
) -> None:
    unnamed = tmp_path / "unnamed.toml"
    unnamed.write_text(
        (ROOT / "configs" / "clicks.toml").read_text().replace('name = "clicks"', "")
    )
    result = train("--config", str(unnamed), "--data", str(clicks_log), cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr.startswith("error: name the model trained on")
    defaults = train("--data", str(clicks_log), "--name", "x", cwd=tmp_path)  # MovieLens tasks
    assert defaults.returncode == 2
    assert "missing column 'rating' needed by task 'like'" in defaults.stderr
    assert not (tmp_path / "models").exists()
