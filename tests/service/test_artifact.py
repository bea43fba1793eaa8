"""The artifact contract: version folder rules, manifest validation, hash verification."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from service.artifact import ArtifactError, Manifest, TaskSpec, read_vocab, write_vocab
from service.repository import fingerprint, list_versions, load_artifact


@pytest.fixture
def repository(trained, tmp_path: Path) -> Path:
    """A copy of the trained artifact's repository, free to damage."""
    _, source = trained
    shutil.copytree(source, tmp_path / "models")
    return tmp_path / "models"


def _manifest(repository: Path, version: str = "1") -> Path:
    return repository / "synth" / version / "manifest.json"


def test_highest_numeric_version_wins(repository: Path) -> None:
    model = repository / "synth"
    shutil.copytree(model / "1", model / "3")
    raw = json.loads(_manifest(repository, "3").read_text())
    raw["version"] = 3
    _manifest(repository, "3").write_text(json.dumps(raw))
    for ignored in ("01", "tmp", ".staging-x", "²", "٣"):  # not ASCII digits: int() fails
        (model / ignored).mkdir()

    assert list_versions(model) == [1, 3]
    assert load_artifact(repository, "synth").manifest.version == 3
    assert load_artifact(repository, "synth", version=1).manifest.version == 1


def test_missing_model_or_version(repository: Path) -> None:
    with pytest.raises(ArtifactError, match="no model versions in"):
        load_artifact(repository, "nothing")
    with pytest.raises(ArtifactError, match=r"version 7 not found .* have \[1\]"):
        load_artifact(repository, "synth", version=7)


def test_unknown_schema_version_is_refused(repository: Path) -> None:
    raw = json.loads(_manifest(repository).read_text())
    raw["schema_version"] = 99
    _manifest(repository).write_text(json.dumps(raw))
    with pytest.raises(ArtifactError, match="schema_version 99 is not supported"):
        load_artifact(repository, "synth")


def test_name_must_match_folder(repository: Path) -> None:
    (repository / "synth").rename(repository / "other")
    with pytest.raises(ArtifactError, match="manifest says synth/1, folder is other/1"):
        load_artifact(repository, "other")


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (
            lambda d: (d / "vocab" / "item_id.txt").unlink(),
            "vocab/item_id.txt is listed .* missing",
        ),
        (lambda d: (d / "vocab" / "user_id.txt").write_text("x\n"), "sha256 of vocab/user_id.txt"),
        (lambda d: (d / "manifest.json").write_text("{not json"), "unreadable"),
        (lambda d: (d / "manifest.json").unlink(), "no manifest.json"),
    ],
)
def test_damaged_artifacts_are_refused(repository: Path, damage, message: str) -> None:
    damage(repository / "synth" / "1")
    with pytest.raises(ArtifactError, match=message):
        load_artifact(repository, "synth")


def test_invalid_manifest_fields_are_refused(repository: Path) -> None:
    raw = json.loads(_manifest(repository).read_text())
    raw["outputs"] = raw["outputs"][::-1]
    _manifest(repository).write_text(json.dumps(raw))
    with pytest.raises(ArtifactError, match="outputs must be the tasks, in task order"):
        load_artifact(repository, "synth")


def test_manifest_round_trips(trained) -> None:
    result, repository = trained
    manifest = load_artifact(repository, "synth").manifest
    assert Manifest.model_validate_json(manifest.model_dump_json()) == manifest


def test_vocab_files_round_trip(tmp_path: Path) -> None:
    # every separator str.splitlines() splits on, but "\n", may sit inside an id
    odd = ["a\rb", "a\x0bb", "a\x0cb", "a\x1cb", "a\x1db", "a\x1eb", "a\x85b", "a\u2028b", "\r"]
    ids = ["1", "a b", "ünï", *odd]
    write_vocab(tmp_path / "v.txt", ids)
    assert read_vocab(tmp_path / "v.txt") == ids
    write_vocab(tmp_path / "empty.txt", [])
    assert read_vocab(tmp_path / "empty.txt") == []
    with pytest.raises(ValueError, match="newline"):
        write_vocab(tmp_path / "w.txt", ["a\nb"])


@pytest.mark.parametrize("name", ["item_id", "score"])
def test_response_keys_are_not_task_names(name: str) -> None:
    with pytest.raises(ValueError, match=f"task name '{name}' is reserved"):
        TaskSpec(name=name, level="item", kind="binary")


def test_the_interaction_task_is_the_item_task_without_a_label_column() -> None:
    click = TaskSpec(name="click", level="item", kind="binary")
    like = TaskSpec(name="like", level="item", kind="binary", column="rating", threshold=4)
    gender = TaskSpec(name="gender", level="user", kind="multiclass", column="gender")
    assert [t.interaction for t in (click, like, gender)] == [True, False, False]


def test_the_fingerprint_follows_content_not_modification_times(repository: Path) -> None:
    folder = repository / "synth" / "1"
    before = fingerprint(folder)
    model = folder / "model.onnx"
    stat = model.stat()
    with model.open("ab") as f:  # a file still growing, its times then put back (cp -p)
        f.write(b"\0")
    os.utime(model, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert fingerprint(folder) != before
    (folder / "model.onnx").write_bytes(model.read_bytes()[:-1])
    os.utime(model, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert fingerprint(folder) == before
    (folder / "vocab" / "late.txt").write_text("")  # a file that arrived later
    assert fingerprint(folder) != before
