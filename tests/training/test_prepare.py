"""`prepare`: the out-of-core path gives the samples the in-memory path gives; bad input stops it
(or the training that reads it) with a clear error before any training."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from harness.training import training_cli
from tests.conftest import tiny_config
from training.config import Config, ConfigError
from training.config_file import load_config
from training.data.prepare import FORMAT, MANIFEST, prepare_folder
from training.data.prepared import Shards, open_prepared, read_manifest
from training.data.raw import DataError
from training.data.split import TRAIN
from training.pipeline.prepare import Prepared, prepare

MOVIELENS = Path("configs/movielens.toml")


def shard_columns(folder: Path) -> dict[str, np.ndarray]:
    """Every sample shard's columns, concatenated in shard order."""
    manifest = read_manifest(folder)
    shards = Shards.open(folder, manifest["shards"], manifest["schema_sha256"])
    parts = [columns for columns, _ in shards.read(0, shards.n_rows)]
    return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}


@pytest.fixture(scope="module")
def movielens(tmp_path_factory: pytest.TempPathFactory) -> tuple[Config, Prepared, Path]:
    cfg = load_config(MOVIELENS)
    folder = tmp_path_factory.mktemp("prepared") / "ml"
    prepare_folder(cfg, "movielens", folder, shard_events=20_000, progress=False)
    return cfg, prepare(cfg, "movielens"), folder


def test_the_prepared_samples_are_the_in_memory_samples_on_movielens(
    movielens: tuple[Config, Prepared, Path],
) -> None:
    cfg, data, folder = movielens
    log, length = data.log, cfg.network.history_length
    got = shard_columns(folder)
    assert len(read_manifest(folder)["shards"]) > 1  # 68,968 events, shards of whole users
    idx = log.events(TRAIN)
    np.testing.assert_array_equal(got["event"], idx)
    np.testing.assert_array_equal(got["item"], log.item[idx])
    np.testing.assert_array_equal(got["history"], log.history(idx, length))
    np.testing.assert_array_equal(got["label_like"], log.item_labels["like"].values[idx])
    np.testing.assert_array_equal(got["mask_like"], log.item_labels["like"].mask[idx])
    users = log.user[idx]
    for task in ("gender", "age", "occupation"):
        labels = log.user_labels[task]
        np.testing.assert_array_equal(got[f"label_{task}"], labels.values[users])
        # holdout users' profile labels are hidden in training, as hide_holdout hides them
        np.testing.assert_array_equal(got[f"mask_{task}"], labels.mask[users] & ~log.holdout[users])


def test_a_prepared_folder_gives_the_same_vocabularies_and_evaluation_sets(
    movielens: tuple[Config, Prepared, Path],
) -> None:
    cfg, data, folder = movielens
    again = prepare(cfg, str(folder))
    assert again.vocabs == data.vocabs
    assert again.tasks == data.tasks
    assert again.shards is not None
    assert again.shards.n_rows == len(data.log.events(TRAIN))
    for name in ("valid", "test"):
        mine, theirs = getattr(again, name), getattr(data, name)
        np.testing.assert_array_equal(mine.items.candidates, theirs.items.candidates)
    assert again.test.ranking is not None
    assert data.test.ranking is not None
    np.testing.assert_array_equal(again.test.ranking.candidates, data.test.ranking.candidates)
    assert again.cold_items is not None
    assert data.cold_items is not None
    np.testing.assert_array_equal(
        again.cold_items.items.candidates, data.cold_items.items.candidates
    )
    np.testing.assert_array_equal(again.log.trained()[0], data.log.trained()[0])
    np.testing.assert_array_equal(again.content.arrays["genres"], data.content.arrays["genres"])


def test_evaluating_a_sample_of_users_gives_the_same_sets_both_ways(tmp_path: Path) -> None:
    cfg = tiny_config("eval.max_users=50")
    prepare_folder(cfg, "synthetic", tmp_path / "p", progress=False)
    memory, folder = prepare(cfg, "synthetic"), prepare(cfg, str(tmp_path / "p"))
    assert len(np.unique(memory.log.user[memory.test.items.index])) == 50
    assert len(np.unique(folder.log.user)) == 50  # only their sequences are kept
    np.testing.assert_array_equal(memory.test.items.candidates, folder.test.items.candidates)
    np.testing.assert_array_equal(memory.valid.items.candidates, folder.valid.items.candidates)


def interactions_folder(tmp_path: Path, inter: pd.DataFrame) -> Path:
    folder = tmp_path / "log"
    folder.mkdir()
    inter.to_csv(folder / "interactions.csv", index=False)
    pd.DataFrame({"user_id": ["u1", "u2"], "gender": ["F", "M"]}).to_csv(
        folder / "users.csv", index=False
    )
    pd.DataFrame({"item_id": ["a", "b", "c", "d"]}).to_csv(folder / "items.csv", index=False)
    return folder


def test_bad_interactions_are_named_by_file_line_and_column(tmp_path: Path) -> None:
    inter = pd.DataFrame(
        {
            "user_id": ["u1", "u1", "u9", "u2", "u2"],
            "item_id": ["a", "b", "c", "zz", "d"],
            "timestamp": ["1", "2", "3", "4", "soon"],
        }
    )
    cfg = load_config(
        None, ['--tasks=[{"name": "click", "level": "item", "kind": "binary"}]', "--name=shop"]
    )
    with pytest.raises(DataError) as raised:
        prepare_folder(
            cfg, str(interactions_folder(tmp_path, inter)), tmp_path / "p", progress=False
        )
    message = str(raised.value)
    assert "3 problem(s)" in message
    assert "interactions.csv line 4, column user_id: 'u9' is not in users" in message
    assert "interactions.csv line 5, column item_id: 'zz' is not in items" in message
    assert "interactions.csv line 6, column timestamp: 'soon' is not an integer" in message


def test_prepare_refuses_to_replace_a_folder_of_other_files(tmp_path: Path) -> None:
    (tmp_path / "mine.txt").write_text("keep me")
    with pytest.raises(DataError, match="a folder with other files"):
        prepare_folder(tiny_config(), "synthetic", tmp_path, progress=False)
    assert (tmp_path / "mine.txt").is_file()


@pytest.fixture
def tiny(tmp_path: Path) -> tuple[Config, Path]:
    cfg = tiny_config()
    folder = tmp_path / "prep"
    prepare_folder(cfg, "synthetic", folder, shard_events=1000, progress=False)
    return cfg, folder


def test_a_shard_with_another_schema_is_refused(tiny: tuple[Config, Path]) -> None:
    cfg, folder = tiny
    shard = folder / read_manifest(folder)["shards"][1]["file"]
    table = pq.read_table(shard)
    pq.write_table(table.append_column("extra", pa.array(np.zeros(table.num_rows))), shard)
    with pytest.raises(DataError, match="part-00001.parquet: its schema differs"):
        open_prepared(folder, cfg)


def test_a_missing_shard_or_a_changed_row_count_is_refused(tiny: tuple[Config, Path]) -> None:
    cfg, folder = tiny
    manifest = read_manifest(folder)
    first = folder / manifest["shards"][0]["file"]
    table = pq.read_table(first)
    pq.write_table(table.slice(0, 10), first)
    with pytest.raises(DataError, match=r"part-00000.parquet: 10 rows, the manifest says \d+"):
        open_prepared(folder, cfg)
    pq.write_table(table, first)
    (folder / manifest["shards"][2]["seen"]).unlink()
    with pytest.raises(DataError, match="shard samples/seen-00002.parquet is missing"):
        open_prepared(folder, cfg)


def test_training_with_another_config_than_the_folders_is_refused(
    tiny: tuple[Config, Path],
) -> None:
    _, folder = tiny
    with pytest.raises(ConfigError, match="differs in eval.seed, network.history_length"):
        open_prepared(folder, tiny_config("network.history_length=12", "eval.seed=7"))
    (folder / MANIFEST).write_text(json.dumps({"format": 99}))
    with pytest.raises(DataError, match=f"not a format-{FORMAT} prepared manifest"):
        open_prepared(folder, tiny_config())
    shutil.rmtree(folder)
    with pytest.raises(DataError, match="no prepared.json"):
        read_manifest(folder)


def test_the_cli_prepares_and_says_what_it_wrote(tmp_path: Path) -> None:
    flags = [f"--{o}" for o in ("synthetic.n_users=200", "synthetic.n_items=120")]
    done = training_cli(
        "prepare",
        "--data",
        "synthetic",
        "--out",
        str(tmp_path / "p"),
        "--quiet",
        "--shard-events=2000",
        *flags,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    manifest = read_manifest(tmp_path / "p")
    assert (
        f"{manifest['train_events']:,} training events in {len(manifest['shards'])}" in done.stdout
    )
    bad = training_cli(
        "prepare",
        "--data",
        str(tmp_path / "nowhere"),
        "--out",
        str(tmp_path / "q"),
        "--name=x",
        "--quiet",
    )
    assert bad.returncode == 2
    assert bad.stderr.startswith("error: ")
    assert "no interactions.csv" in bad.stderr
