"""SASRec, the ranking anchor: its sequences hold training events only, its attention looks
back only, it learns planted tastes, and `python -m training sasrec` compares an artifact with
it on the same events."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from harness.training import training_cli
from service.artifact import PAD
from service.repository import verify_folder
from tests.conftest import learning_config
from training.__main__ import main
from training.config import ConfigError
from training.data.samples import Events
from training.data.split import TEST, TRAIN
from training.evaluation.bootstrap import Interval
from training.evaluation.evaluate import baseline_predictor, task_metrics
from training.pipeline.prepare import prepare
from training.studies.artifact_split import artifact_data
from training.studies.ranking_anchor import verdict
from training.studies.sasrec import (
    CLICK,
    SASRec,
    SASRecConfig,
    fit_sasrec,
    predictor,
    training_sequences,
)


@pytest.fixture(scope="module")
def data():
    return prepare(learning_config(), "synthetic")


def test_sequences_hold_each_users_training_events_read_with_the_items_before(data) -> None:
    log = data.log
    seq = training_sequences(log, length=12)
    at = seq.targets >= 0
    assert (log.part[seq.targets[at]] == TRAIN).all(), "never a validation or test event"
    assert (log.position[seq.targets[at]] > 0).all(), "a first event has nothing to read"
    assert (seq.inputs[at] == log.item[seq.targets[at] - 1]).all(), "the item just before"
    assert (seq.inputs[~at] == PAD).all()
    assert (seq.positives[at] == log.item[seq.targets[at]]).all(), "the item it predicts"
    assert (seq.positives[~at] == PAD).all()
    users = log.user[seq.targets[:, -1]]
    assert len(np.unique(users)) == len(users), "one row per user"
    for row in range(3):
        mine = np.flatnonzero((log.user == users[row]) & (log.part == TRAIN))[1:][-12:]
        np.testing.assert_array_equal(seq.targets[row][at[row]], mine)  # the last 12, in order


def test_attention_looks_back_only() -> None:
    model = SASRec(30, SASRecConfig(d_model=8, length=6, n_blocks=2, n_heads=2)).eval()
    a = torch.tensor([[0, 0, 3, 4, 5, 6]])
    b = torch.tensor([[0, 0, 3, 4, 9, 12]])  # the last two items changed
    with torch.no_grad():
        ha, hb = model(a), model(b)
    torch.testing.assert_close(ha[:, :4], hb[:, :4])
    assert not torch.allclose(ha[:, 5], hb[:, 5])


@pytest.mark.parametrize("loss", ["bce", "ce"])
def test_sasrec_learns_the_planted_tastes_beyond_popularity(data, loss: str) -> None:
    settings = SASRecConfig(
        d_model=32, length=20, epochs=30, check_every=5, batch_size=64, loss=loss
    )
    model, checks = fit_sasrec(data.log, learning_config().eval, settings, progress=False)
    ours = task_metrics(data.log, data.test, [CLICK], predictor(model, data.log, 20), 10)
    popularity = task_metrics(
        data.log, data.test, [CLICK], baseline_predictor(data.log, [CLICK]), 10
    )
    assert checks[-1]["epoch"] <= 30
    assert ours["click_auc"] > popularity["click_auc"] + 0.03
    assert ours["hr@10"] > popularity["hr@10"] + 0.03


def test_an_unknown_loss_is_refused(data) -> None:
    with pytest.raises(ValueError, match="SASRec's loss must be one of"):
        fit_sasrec(data.log, learning_config().eval, SASRecConfig(loss="bpr"), progress=False)


def test_a_paired_interval_gives_the_verdict() -> None:
    assert verdict(Interval(0.02, 0.01, 0.03)) == "ahead"
    assert verdict(Interval(-0.02, -0.03, -0.01)) == "behind"
    assert verdict(Interval(0.01, -0.01, 0.03)) == "tie"


@pytest.fixture(scope="module")
def held_out(trained, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The session's run's evaluated model (its held-out checkpoint) published as an artifact:
    the comparison needs a model that never trained on the test events."""
    result, _ = trained
    repository = tmp_path_factory.mktemp("held-out")
    checkpoint = result.report["json"].parent / "heldout.pt"
    assert main(["export", "--checkpoint", str(checkpoint), "--out", str(repository)]) == 0
    return repository / "synth" / "1"


@pytest.fixture(scope="module")
def compared(held_out: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """`python -m training sasrec` on the held-out artifact: (artifact, report folder)."""
    artifact = held_out
    out = tmp_path_factory.mktemp("sasrec")
    args = ["--model", str(artifact), "--seeds", "2", "--jobs", "2", "--epochs", "5"]
    assert main(["sasrec", *args, "--resamples", "50", "--out", str(out)]) == 0  # in process
    return artifact, out


def test_the_comparison_scores_the_artifact_as_its_manifest_says(compared) -> None:
    artifact, out = compared
    results = json.loads((out / "sasrec.json").read_text())
    figures = results["figures"]
    manifest = json.loads((artifact / "manifest.json").read_text())
    for metric in ("click_auc", "hr@10", "ndcg@10"):  # the artifact's figures, rescored
        assert figures[f"model/{metric}"]["value"] == pytest.approx(
            manifest["metrics"][metric], abs=1e-4
        )
        seeds = [figures[f"SASRec {s}/{metric}"]["value"] for s in (0, 1)]
        assert figures[f"SASRec/{metric}"]["value"] == pytest.approx(np.mean(seeds))
        difference = figures[f"model - SASRec/{metric}"]
        expected = figures[f"model/{metric}"]["value"] - np.mean(seeds)
        assert difference["value"] == pytest.approx(expected)
        assert difference["low"] <= difference["value"] <= difference["high"]
    assert [run["seed"] for run in results["seeds"]] == [0, 1]
    assert all(run["checks"][-1]["epoch"] == 5 for run in results["seeds"])
    text = (out / "sasrec.md").read_text()
    assert "| **model - SASRec** (paired) |" in text
    assert (out / "sasrec.png").stat().st_size > 10_000


def test_the_full_catalogue_figures_are_the_artifacts_and_sasrecs_on_the_same_users(
    compared, trained
) -> None:
    """Every row of the full-catalogue table, on the artifact's graph: the model over every
    item is the checkpoint's figure in torch; SASRec's mean is the mean of its seeds; the
    paired differences are the rows' differences."""
    from training.pipeline.checkpoint import evaluate_checkpoint

    artifact, out = compared
    full = json.loads((out / "sasrec.json").read_text())["full_catalogue"]
    figures = full["figures"]
    assert full["rows"][-3:] == ["SASRec 0", "SASRec 1", "SASRec"]
    listed = {"popularity", "retrieval score alone", "two-stage, R = 100", "model, every item"}
    assert listed <= set(full["rows"])
    assert full["differences"] == ["two-stage, R = 100 - SASRec", "model, every item - SASRec"]
    result, _ = trained
    torch_figures = evaluate_checkpoint(result.report["json"].parent / "heldout.pt", None).full
    assert full["users"] == torch_figures.users
    for metric in ("hr@10", "ndcg@10", "hr@50"):
        for row in ("popularity", "retrieval score alone", "model, every item"):
            assert figures[f"{row}/{metric}"]["value"] == pytest.approx(
                torch_figures.by_scorer[row][metric].value, abs=0.011
            ), (row, metric)  # the graph in onnxruntime against the model in torch
        seeds = [figures[f"SASRec {s}/{metric}"]["value"] for s in (0, 1)]
        assert figures[f"SASRec/{metric}"]["value"] == pytest.approx(np.mean(seeds))
        for row in ("two-stage, R = 100", "model, every item"):
            difference = figures[f"{row} - SASRec/{metric}"]
            expected = figures[f"{row}/{metric}"]["value"] - np.mean(seeds)
            assert difference["value"] == pytest.approx(expected)
            assert difference["low"] <= difference["value"] <= difference["high"]
    text = (out / "sasrec.md").read_text()
    assert "## Over the full catalogue" in text
    assert "| **two-stage, R = 100 - SASRec** (paired) |" in text


def test_sasrecs_catalogue_scores_are_the_logits_of_its_click_probabilities(data) -> None:
    from training.studies.sasrec import catalogue_scorer

    log = data.log
    model = SASRec(log.n_items, SASRecConfig(d_model=8, length=10, n_blocks=1))
    first = log.first_events(TEST)[:5]
    candidates = np.repeat(np.arange(log.n_items)[None, :], len(first), axis=0)
    probabilities = predictor(model, log, 10)(Events(first, candidates))[CLICK.name]
    logits = catalogue_scorer(model, log, 10)(first)
    assert logits.shape == (5, log.n_items)
    np.testing.assert_allclose(1 / (1 + np.exp(-logits)), probabilities, rtol=1e-5, atol=1e-6)


def test_a_refit_artifact_is_refused(trained) -> None:
    _, repository = trained  # the session's published model: a refit
    with pytest.raises(ConfigError, match="refit on all of its data"):
        artifact_data(verify_folder(repository / "synth" / "1"))


def test_an_artifact_of_other_data_is_refused(held_out: Path) -> None:
    artifact = verify_folder(held_out)
    training = dict(artifact.manifest.training)
    training["synthetic"] = dict(training["synthetic"], n_items=150)  # other items
    other = artifact.model_copy(
        update={"manifest": artifact.manifest.model_copy(update={"training": training})}
    )
    with pytest.raises(ConfigError, match="item_id vocabulary is not the one of 'synthetic'"):
        artifact_data(other)


def test_overrides_and_bad_counts_are_refused(trained) -> None:
    _, repository = trained
    artifact = str(repository / "synth" / "1")
    for extra, message in (
        (["--optim.lr=0.1"], "overrides are not allowed"),
        (["--seeds", "0"], "--seeds, --jobs, --epochs and --resamples must be >= 1"),
    ):
        run = training_cli("sasrec", "--model", artifact, *extra)
        assert run.returncode == 2
        assert message in run.stderr
