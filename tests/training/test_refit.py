"""The refit (training.fit.refit): what `train` publishes has learned from all of the data."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from harness.training import training_cli
from service.artifact import FIRST_ID
from service.repository import load_artifact
from tests.conftest import TINY, learning_config
from training.data.prepare import prepare_folder
from training.data.sources import raw_tables
from training.fit.refit import learned_from
from training.fit.train import HELDOUT_CHECKPOINT, load_checkpoint
from training.pipeline.prepare import prepare
from training.pipeline.run import train_and_export


def test_the_refit_learns_from_every_event_label_and_item(trained) -> None:
    # Given the session's run (evaluated, then refit) and its data
    result, repository = trained
    data = prepare(learning_config(), "synthetic")
    inter = data.tables.interactions
    users = np.unique(data.vocabs["user_id"].encode(inter["user_id"]))

    # Then the published weights learned from every interaction, user, item and label
    fit = result.fit
    assert fit.refit
    assert fit.events == len(inter)
    assert fit.users == inter["user_id"].nunique()
    assert fit.items == inter["item_id"].nunique()
    for name, labels in data.log.user_labels.items():
        assert fit.user_labels[name] == int(labels.mask[users].sum()) > 0
    manifest = load_artifact(repository, "synth").manifest
    assert manifest.fit == fit
    assert manifest.catalogue.n_trained == fit.items
    # and the evaluated run, whose figures the manifest carries, learned from less
    _, raw = load_checkpoint(result.report["json"].parent / HELDOUT_CHECKPOINT)
    held = raw["fit"]
    assert not held["refit"]
    assert held["events"] == int((data.log.part == 0).sum()) < fit.events
    assert held["items"] < fit.items  # the cold items
    for name, count in held["user_labels"].items():
        assert count < fit.user_labels[name]  # the holdout users' labels
    assert manifest.metrics == pytest.approx(result.metrics, nan_ok=True)


def test_no_refit_publishes_the_evaluated_weights(tmp_path: Path) -> None:
    # Given the same tiny run with and without the refit (one thread each: exact on the CPU)
    flags = [f"--{o}" for o in TINY if not o.startswith("optim.epochs")] + ["--optim.epochs=2"]
    runs = {}
    for name, extra in (("alone", ["--no-refit"]), ("refit", [])):
        (tmp_path / name).mkdir()
        done = training_cli(
            "train", "--data", "synthetic", "--quiet", *flags, *extra, cwd=tmp_path / name
        )
        assert done.returncode == 0, done.stderr[-2000:]
        runs[name] = tmp_path / name / "reports/synthetic/1"

    # Then --no-refit publishes the evaluated weights, exactly, with the same figures, said
    # to be held out, and keeps no second checkpoint
    held, _ = load_checkpoint(runs["refit"] / HELDOUT_CHECKPOINT)
    published, raw = load_checkpoint(runs["alone"] / "checkpoint.pt")
    mine, theirs = published.state_dict(), held.state_dict()
    assert mine.keys() == theirs.keys()
    assert all(torch.equal(mine[k], theirs[k]) for k in mine)
    assert not (runs["alone"] / HELDOUT_CHECKPOINT).exists()
    manifest = load_artifact(tmp_path / "alone/models", "synthetic").manifest
    assert manifest.fit is not None
    assert not manifest.fit.refit
    assert manifest.fit.model_dump() == raw["fit"]
    reports = {name: json.loads((run / "report.json").read_text()) for name, run in runs.items()}
    assert manifest.fit.epochs == reports["alone"]["best_epoch"]
    assert reports["alone"]["metrics"] == reports["refit"]["metrics"]
    assert reports["alone"]["refit_epochs"] is None


def test_a_prepared_folder_refits_on_the_same_events(tmp_path: Path) -> None:
    # Given MovieLens-sized synthetic data, in memory and as a prepared folder
    cfg = learning_config()
    memory = prepare(cfg, "synthetic")
    prepare_folder(cfg, "synthetic", tmp_path / "prep", shard_events=5_000, progress=False)
    folder = prepare(cfg, str(tmp_path / "prep"))

    # When each gives the refit's data
    in_memory, streamed = memory.everything(), folder.everything()

    # Then both hold every interaction, user, item and profile label, and the streamed shards'
    # events are the in-memory log's, in the same order, every one a training event
    assert streamed.shards is not None
    counted = learned_from(streamed.log, streamed.shards, 1, refit=True)
    assert counted == learned_from(in_memory.log, None, 1, refit=True)
    assert counted.events == len(memory.tables.interactions)
    rows = [columns for columns, _ in streamed.shards.read(0, streamed.shards.n_rows)]
    items = np.concatenate([r["item"] for r in rows])
    positions = np.concatenate([r["position"] for r in rows])
    np.testing.assert_array_equal(items, in_memory.log.item)
    np.testing.assert_array_equal(positions, in_memory.log.position)
    holdout = np.flatnonzero(memory.log.holdout)
    for name in ("gender", "age"):
        user = np.concatenate([r["user"] for r in rows])
        mask = np.concatenate([r[f"mask_{name}"] for r in rows])
        known = memory.log.user_labels[name].mask
        assert mask[np.isin(user, holdout)].sum() == known[user[np.isin(user, holdout)]].sum() > 0


def test_prepare_without_refit_shards_refuses_the_refit(tmp_path: Path) -> None:
    from training.config import ConfigError

    cfg = learning_config()
    prepare_folder(cfg, "synthetic", tmp_path / "prep", progress=False, refit=False)
    with pytest.raises(ConfigError, match="no-refit"):
        prepare(cfg, str(tmp_path / "prep")).everything()


NEW = "fresh"  # an item that appears only at the end of the log


def _log_with_a_late_item(folder: Path) -> list[str]:
    """The synthetic log, plus NEW as the last interaction of every other user (so only the
    held-out period has it); the users who never touched it."""
    cfg = learning_config()
    raw = raw_tables("synthetic", cfg.synthetic)
    inter, items = raw["interactions"].frame, raw["items"].frame
    users = sorted(inter["user_id"].unique())
    late = users[::2]
    last = inter.assign(t=pd.to_numeric(inter["timestamp"])).groupby("user_id")["t"].max()
    extra = pd.DataFrame(
        {
            "user_id": late,
            "item_id": NEW,
            "timestamp": [str(int(last[u]) + 1) for u in late],
            "rating": "5",
        }
    )
    folder.mkdir()
    pd.concat([inter, extra]).to_csv(folder / "interactions.csv", index=False)
    new_item = dict.fromkeys(items.columns, "") | {"item_id": NEW}
    pd.concat([items, pd.DataFrame([new_item])]).to_csv(folder / "items.csv", index=False)
    raw["users"].frame.to_csv(folder / "users.csv", index=False)
    return users[1::2]


def _top_share(checkpoint: Path, folder: Path, users: list[str], k: int) -> float:
    """Share of `users` whose top k of every item they never touched holds NEW (click)."""
    model, raw = load_checkpoint(checkpoint)
    data = prepare(learning_config("features=[]", "name=late"), str(folder))
    log, length = data.everything().log, model.args.network.history_length
    vocab = data.vocabs["item_id"]
    new = int(vocab.encode(pd.Series([NEW]))[0])
    everything = torch.arange(FIRST_ID, vocab.size)
    hits = 0
    for user in data.vocabs["user_id"].encode(pd.Series(users)):
        mine = np.flatnonzero(log.user == user)
        history = torch.from_numpy(log.item[mine][-length:]).reshape(1, -1)
        history = torch.nn.functional.pad(history, (length - history.shape[1], 0))
        touched = torch.from_numpy(np.isin(everything.numpy(), log.item[mine]))
        candidates = everything[~touched]
        with torch.no_grad():
            logits = model(torch.tensor([user]), history, candidates, torch.zeros_like(candidates))[
                "click"
            ]
        top = candidates[torch.topk(logits, k).indices]
        hits += int(new in top.tolist())
    return hits / len(users)


@pytest.mark.slow
def test_an_item_of_the_held_out_period_is_ranked_high_by_the_refit_only(tmp_path: Path) -> None:
    # Given a log whose last events make a new item popular
    others = _log_with_a_late_item(tmp_path / "data")

    # When it is trained (the evaluated run holds those events out; the refit learns them)
    cfg = learning_config("features=[]", "name=late")
    result = train_and_export(
        cfg, str(tmp_path / "data"), tmp_path / "m", tmp_path / "r", progress=False
    )

    # Then for the users who never touched it, the refit ranks it in their top 10 and the
    # held-out model, which never saw it, does not
    assert result is not None
    run = result.report["json"].parent
    refit = _top_share(run / "checkpoint.pt", tmp_path / "data", others, 10)
    held_out = _top_share(run / HELDOUT_CHECKPOINT, tmp_path / "data", others, 10)
    assert refit >= 0.3, (refit, held_out)  # 0.46 measured (of ~160 untouched items each)
    assert held_out <= 0.05, (refit, held_out)  # 0.0 measured: its id was never trained
