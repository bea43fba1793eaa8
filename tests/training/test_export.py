"""Export: ONNX graph per the contract, parity with torch, atomic publish, manifest round trip."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

from service.artifact import SCHEMA_VERSION, ArtifactError
from service.repository import list_versions, load_artifact
from training.fit.train import load_checkpoint
from training.pipeline.prepare import prepare
from training.pipeline.run import parity_inputs
from training.publish import export
from training.publish.export import ExportError, export_artifact


def test_artifact_has_the_contract_files(trained) -> None:
    result, repository = trained
    artifact = load_artifact(repository, "synth")
    m = artifact.manifest

    assert artifact.path == result.artifact
    assert m.schema_version == SCHEMA_VERSION
    assert (m.name, m.version) == ("synth", 1)
    assert set(m.files) == {
        "model.onnx",
        "content.onnx",
        "vocab/user_id.txt",
        "vocab/item_id.txt",
        "vocab/genres.txt",
        "retrieval/items.npy",
        "retrieval/rank.onnx",
    }
    assert [(f.column, f.kind) for f in m.catalogue.features] == [
        ("genres", "multi_categorical"),
        ("year", "numeric"),
    ]
    assert m.catalogue.features[1].mean is not None
    assert m.catalogue.features[1].std > 0
    assert m.catalogue.tables == {"item": "item_table", "profile": "profile_table"}
    assert [t.name for t in m.tasks] == ["click", "like", "gender", "age", "occupation"]
    assert m.task("age").classes == ("<25", "25-34", "35-44", "45-54", "55+")
    assert m.metrics == result.metrics
    assert m.baselines["click_auc"] > 0
    assert m.ranking.weights == {"click": 1.0, "like": 1.0}
    assert m.training["data"] == "synthetic"
    assert len(artifact.read_vocab("user_id")) == m.vocabularies["user_id"].size == 500


def test_onnx_graph_inputs_outputs_and_dynamic_axes(trained) -> None:
    result, repository = trained
    n_occupations = len(load_artifact(repository, "synth").manifest.task("occupation").classes)
    session = ort.InferenceSession(str(result.artifact / "model.onnx"))
    inputs = {i.name: (i.type, i.shape) for i in session.get_inputs()}
    outputs = {o.name: o.shape for o in session.get_outputs()}

    assert inputs == {
        "user_id": ("tensor(int64)", ["B"]),
        "history": ("tensor(int64)", ["B", 20]),
        "candidate": ("tensor(int64)", ["N"]),
        "candidate_row": ("tensor(int64)", ["N"]),
    }
    assert outputs == {
        "click": ["N"],
        "like": ["N"],
        "gender": ["B", 2],
        "age": ["B", 5],
        "occupation": ["B", n_occupations],
        "query": ["B", 32],
        "user_state": ["B", 2, 32],
    }


def test_retrieval_score_is_the_click_logits_dot_part(trained) -> None:
    """The exported query against the exported item vectors is the dot part of the torch
    model's click logit, <W h_u, e_i>, for every item: what the service's index searches by."""
    import torch

    from service.artifact import FIRST_ID

    result, repository = trained
    manifest = load_artifact(repository, "synth").manifest
    assert manifest.retrieval is not None
    assert (manifest.retrieval.task, manifest.retrieval.dim) == ("click", 32)
    vectors = np.load(result.artifact / manifest.retrieval.item_vectors)
    assert vectors.shape == (manifest.vocabularies["item_id"].size, 32)
    session = ort.InferenceSession(str(result.artifact / "model.onnx"))
    users, history = np.array([3, 7]), np.random.default_rng(0).integers(0, 200, (2, 20))
    empty = np.zeros(0, dtype=np.int64)
    feed = {"user_id": users, "history": history, "candidate": empty, "candidate_row": empty}
    query = session.run(["query"], feed)[0]

    model, _ = load_checkpoint(result.report["json"].parent / "checkpoint.pt")
    model.eval()
    with torch.no_grad():
        logits = model(
            torch.as_tensor(users),
            torch.as_tensor(history),
            torch.tensor([FIRST_ID, FIRST_ID]),
            torch.tensor([0, 1]),
            catalogue="click",
        )["click@catalogue"].numpy()
    np.testing.assert_allclose(query @ vectors.T, logits[:, FIRST_ID:], atol=1e-4)


def test_parity_is_recorded_and_within_tolerance(trained) -> None:
    result, repository = trained
    assert 0.0 <= load_artifact(repository, "synth").manifest.parity_max_abs_diff <= 1e-4


def test_ragged_batch_matches_one_user_at_a_time(trained) -> None:
    result, _ = trained
    session = ort.InferenceSession(str(result.artifact / "model.onnx"))
    rng = np.random.default_rng(0)
    users, history = np.array([3, 7, 9]), rng.integers(0, 200, (3, 20))
    counts = [1, 4, 2]
    candidate = rng.integers(2, 200, sum(counts))
    row = np.repeat(np.arange(3), counts)
    together = session.run(
        None, {"user_id": users, "history": history, "candidate": candidate, "candidate_row": row}
    )
    for u in range(3):
        alone = session.run(
            None,
            {
                "user_id": users[u : u + 1],
                "history": history[u : u + 1],
                "candidate": candidate[row == u],
                "candidate_row": np.zeros(counts[u], dtype=np.int64),
            },
        )
        np.testing.assert_allclose(alone[0], together[0][row == u], atol=1e-5)
        np.testing.assert_allclose(alone[2], together[2][u : u + 1], atol=1e-5)


def test_failed_parity_publishes_nothing(
    trained, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    result, _ = trained
    model, raw = load_checkpoint(result.report["json"].parent / "checkpoint.pt")
    from tests.conftest import learning_config

    cfg = learning_config()
    data = prepare(cfg, "synthetic")
    monkeypatch.setattr(export, "PARITY_TOLERANCE", -1.0)

    with pytest.raises(ExportError, match="differs from torch"):
        export_artifact(
            model,
            data.vocabs,
            data.content,
            parity_inputs(data, cfg),
            tmp_path,
            "synth",
            {"training": raw["config"]},
        )

    assert list_versions(tmp_path / "synth") == []
    assert list((tmp_path / "synth").iterdir()) == [], "no staging folder left behind"


def test_tampered_model_is_refused(trained, tmp_path: Path) -> None:
    import shutil

    _, repository = trained
    copy = tmp_path / "models"
    shutil.copytree(repository, copy)
    with (copy / "synth" / "1" / "model.onnx").open("ab") as f:
        f.write(b"\0")
    with pytest.raises(ArtifactError, match="sha256 of model.onnx does not match"):
        load_artifact(copy, "synth")


def test_reference_design_trains_and_exports(tmp_path: Path) -> None:
    from training.config_file import load_config
    from training.pipeline.run import train_and_export

    root = Path(__file__).resolve().parents[2]
    cfg = load_config(
        root / "configs" / "reference.toml",
        ["optim.epochs=1", "synthetic.n_users=200", "eval.n_rank_negatives=50"],
    )
    result = train_and_export(cfg, "synthetic", tmp_path / "models", tmp_path / "r", progress=False)

    manifest = load_artifact(tmp_path / "models", "reference").manifest
    assert [(o.name, o.shape) for o in manifest.outputs] == [
        ("click", ("N",)),
        ("age", ("B", 5)),
        ("query", ("B", 64)),
        ("user_state", ("B", 1, 64)),
    ]
    assert manifest.training["network"]["encoder"] == "lstm"
    assert manifest.parity_max_abs_diff <= 1e-4
    assert set(result.metrics) >= {"click_auc", "hr@10", "age_accuracy", "age_macro_f1"}


def test_int8_export_is_a_servable_artifact_with_its_own_metrics(
    trained, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import onnx

    from service.config import Settings
    from service.predictor import Predictor
    from training.__main__ import main

    result, _ = trained
    checkpoint = result.report["json"].parent / "heldout.pt"  # a refit's figures: unmeasurable
    assert main(["export", "--checkpoint", str(checkpoint), "--out", str(tmp_path)]) == 0
    args = ["export", "--checkpoint", str(checkpoint), "--out", str(tmp_path), "--quantize", "int8"]
    assert main(args) == 0
    refit = [*args[:2], str(result.report["json"].parent / "checkpoint.pt"), *args[3:]]
    assert main(refit) == 2
    said = capsys.readouterr()
    assert "quantise the held-out checkpoint" in said.err

    float32, int8 = load_artifact(tmp_path, "synth", 1), load_artifact(tmp_path, "synth", 2)
    assert int8.manifest.training["quantize"] == "int8"
    graph = onnx.load(str(int8.path / "model.onnx"))
    assert any(t.data_type == onnx.TensorProto.INT8 for t in graph.graph.initializer)
    size = (int8.path / "model.onnx").stat().st_size
    assert size < 0.6 * (float32.path / "model.onnx").stat().st_size
    assert 0 < int8.manifest.parity_max_abs_diff <= export.QUANTIZED_TOLERANCE
    assert int8.manifest.metrics != float32.manifest.metrics, "its own figures, not float's"
    assert int8.manifest.metrics["click_auc"] == pytest.approx(
        float32.manifest.metrics["click_auc"], abs=0.05
    )
    assert "| click_auc |" in said.out
    Predictor.load(Settings(model_dir=tmp_path, model_name="synth", model_version=2))
