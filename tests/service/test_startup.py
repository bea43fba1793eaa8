"""A missing, tampered or incompatible artifact never becomes a serving app."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import onnx
import pytest
from fastapi.testclient import TestClient
from onnx import TensorProto, helper

from service.artifact import ArtifactError, Manifest, write_manifest
from service.main import create_app
from tests.service.conftest import DEFAULT_MODEL, settings_for


def start(repository: Path) -> None:
    with TestClient(create_app(settings_for(repository))):
        pass


def version_dir(repository: Path) -> Path:
    return next((repository / DEFAULT_MODEL).iterdir())


def manifest_of(folder: Path) -> Manifest:
    return Manifest.model_validate_json((folder / "manifest.json").read_text())


def edit_manifest(folder: Path, **changes: object) -> None:
    path = folder / "manifest.json"
    path.write_text(json.dumps(json.loads(path.read_text()) | changes))


def test_missing_repository(tmp_path: Path) -> None:
    with pytest.raises(ArtifactError, match="no model versions"):
        start(tmp_path / "nowhere")


def test_missing_version(repository_copy: Path) -> None:
    settings = settings_for(repository_copy, model_version=7)
    with (
        pytest.raises(ArtifactError, match="version 7 not found"),
        TestClient(create_app(settings)),
    ):
        pass


def test_tampered_model_file(repository_copy: Path) -> None:
    with (version_dir(repository_copy) / "model.onnx").open("ab") as f:
        f.write(b"\0")
    with pytest.raises(ArtifactError, match="sha256 of model.onnx"):
        start(repository_copy)


def test_tampered_vocabulary(repository_copy: Path) -> None:
    vocab = version_dir(repository_copy) / "vocab" / "item_id.txt"
    vocab.write_text(vocab.read_text().replace("\n50\n", "\n5O\n"))
    with pytest.raises(ArtifactError, match="sha256 of vocab/item_id.txt"):
        start(repository_copy)


def test_unknown_schema_version(repository_copy: Path) -> None:
    edit_manifest(version_dir(repository_copy), schema_version=99)
    with pytest.raises(ArtifactError, match="schema_version 99 is not supported"):
        start(repository_copy)


def test_graph_that_does_not_match_the_manifest(repository_copy: Path) -> None:
    folder = version_dir(repository_copy)
    manifest = json.loads((folder / "manifest.json").read_text())
    manifest["inputs"][0]["dtype"] = "float32"
    edit_manifest(folder, inputs=manifest["inputs"])
    with pytest.raises(ArtifactError, match="graph inputs .* do not match the manifest"):
        start(repository_copy)


def test_vocabulary_size_that_does_not_match(repository_copy: Path) -> None:
    folder = version_dir(repository_copy)
    manifest = json.loads((folder / "manifest.json").read_text())
    manifest["vocabularies"]["item_id"]["size"] += 1
    edit_manifest(folder, vocabularies=manifest["vocabularies"])
    with pytest.raises(ArtifactError, match="item_id.txt has 1684 ids, the manifest says 1685"):
        start(repository_copy)


def test_a_file_that_is_not_onnx(repository_copy: Path) -> None:
    folder = version_dir(repository_copy)
    (folder / "model.onnx").write_bytes(b"not a graph")
    write_manifest(folder, manifest_of(folder))
    with pytest.raises(ArtifactError, match="onnxruntime cannot load it"):
        start(repository_copy)


def click_only_graph(folder: Path, nodes: list, history_length: int | None = None) -> None:
    """Replace the model with a graph of the right inputs whose only task is `click`, computed
    by `nodes` from `candidate` (history `history_length` wide, the manifest's by default)."""
    manifest = manifest_of(folder)
    click = manifest.task("click")
    width = history_length or manifest.history_length
    inputs = [
        helper.make_tensor_value_info("user_id", TensorProto.INT64, ["B"]),
        helper.make_tensor_value_info("history", TensorProto.INT64, ["B", width]),
        helper.make_tensor_value_info("candidate", TensorProto.INT64, ["N"]),
        helper.make_tensor_value_info("candidate_row", TensorProto.INT64, ["N"]),
    ]
    graph = helper.make_graph(
        nodes, "raw", inputs, [helper.make_tensor_value_info("click", TensorProto.FLOAT, ["N"])]
    )
    onnx.save(
        helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)]), folder / "model.onnx"
    )
    write_manifest(
        folder,
        manifest.model_copy(
            update={
                "tasks": (click,),
                "outputs": tuple(o for o in manifest.outputs if o.name == "click"),
                "ranking": manifest.ranking.model_copy(update={"weights": {"click": 1.0}}),
                "retrieval": None,
                "history_min_length": None,  # a graph of one fixed width
            }
        ),
    )


TWICE_THE_INDEX = [
    helper.make_node("Cast", ["candidate"], ["index"], to=TensorProto.FLOAT),
    helper.make_node("Constant", [], ["two"], value_float=2.0),
    helper.make_node("Mul", ["index", "two"], ["click"]),
]


def test_warm_up_refuses_outputs_that_are_not_probabilities(repository_copy: Path) -> None:
    # Given: a graph with the right signature whose `click` is twice the candidate index
    click_only_graph(version_dir(repository_copy), TWICE_THE_INDEX)
    # When / Then
    with pytest.raises(ArtifactError, match="warm-up: click is not a probability"):
        start(repository_copy)


def test_a_history_length_other_than_the_manifests_is_refused(repository_copy: Path) -> None:
    folder = version_dir(repository_copy)
    click_only_graph(folder, TWICE_THE_INDEX, history_length=50)
    with pytest.raises(ArtifactError, match=r"history has shape \['B', 50\], the manifest says"):
        start(repository_copy)


def test_a_graph_of_fixed_width_cannot_promise_narrower_windows(repository_copy: Path) -> None:
    folder = version_dir(repository_copy)
    click_only_graph(folder, TWICE_THE_INDEX)
    manifest = manifest_of(folder)
    write_manifest(folder, manifest.model_copy(update={"history_min_length": 50}))
    with pytest.raises(ArtifactError, match="from width 50 .history_min_length., so not a fixed"):
        start(repository_copy)


def test_an_onnxruntime_error_in_warm_up_is_a_rejected_version(repository_copy: Path) -> None:
    # Given: a graph that loads, and fails when run (one candidate cannot be reshaped to [-1, 3])
    reshape = [
        helper.make_node("Cast", ["candidate"], ["index"], to=TensorProto.FLOAT),
        helper.make_node("Constant", [], ["rows"], value_ints=[-1, 3]),
        helper.make_node("Reshape", ["index", "rows"], ["grid"]),
        helper.make_node("Constant", [], ["flat"], value_ints=[-1]),
        helper.make_node("Reshape", ["grid", "flat"], ["click"]),
    ]
    click_only_graph(version_dir(repository_copy), reshape)
    # When / Then: an ArtifactError naming it, as for every other load failure
    with pytest.raises(ArtifactError, match="cannot be loaded: .*Reshape"):
        start(repository_copy)


def test_an_intact_copy_serves(repository_copy: Path) -> None:
    with TestClient(create_app(settings_for(repository_copy))) as client:
        assert client.get("/readyz").json()["status"] == "ready"


def test_highest_version_is_served_unless_one_is_configured(repository_copy: Path) -> None:
    folder = version_dir(repository_copy)
    newer = folder.parent / str(int(folder.name) + 1)
    newer.mkdir()
    for path in folder.rglob("*"):
        if path.is_file() and path.name != "manifest.json":
            target = newer / path.relative_to(folder)
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(path.read_bytes())
    write_manifest(
        newer,
        manifest_of(folder).model_copy(update={"version": int(newer.name)}),
    )
    with TestClient(create_app(settings_for(repository_copy))) as client:
        assert client.get("/readyz").json()["version"] == newer.name
    pinned = settings_for(repository_copy, model_version=int(folder.name))
    with TestClient(create_app(pinned)) as client:
        assert client.get("/readyz").json()["version"] == folder.name


def test_a_bad_newest_version_is_skipped_unless_pinned(repository_copy: Path) -> None:
    folder = version_dir(repository_copy)
    newer = folder.parent / str(int(folder.name) + 1)
    shutil.copytree(folder, newer)
    edit_manifest(newer, version=int(newer.name))  # its manifest no longer hashes... itself
    (newer / "model.onnx").write_bytes(b"half a file")
    with TestClient(create_app(settings_for(repository_copy))) as client:
        assert client.get("/readyz").json()["version"] == folder.name
        (listed,) = client.get("/v1/models").json()["models"][0]["rejected"]
        assert listed["version"] == newer.name
        assert "sha256 of model.onnx" in listed["reason"]
        assert 'hydrarec_model_loads_total{result="failure"} 1.0' in client.get("/metrics").text
    with pytest.raises(ArtifactError, match="sha256 of model.onnx"):
        start_pinned(repository_copy, int(newer.name))


def start_pinned(repository: Path, version: int) -> None:
    with TestClient(create_app(settings_for(repository, model_version=version))):
        pass


def test_a_task_named_like_a_response_key_is_refused_at_load(repository_copy: Path) -> None:
    folder = version_dir(repository_copy)
    manifest = json.loads((folder / "manifest.json").read_text())
    manifest["tasks"][0]["name"] = manifest["outputs"][0]["name"] = "score"
    manifest["ranking"]["weights"] = {"score": 1.0}
    edit_manifest(folder, **manifest)
    with pytest.raises(ArtifactError, match="task name 'score' is reserved"):
        start(repository_copy)
