"""Service fixtures: the committed default model, copies of it to break, and ASGI clients."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from service.artifact import Artifact
from service.config import Settings
from service.main import create_app
from service.repository import load_artifact

REPOSITORY = Path(__file__).resolve().parents[2] / "models"
DEFAULT_MODEL = "movielens"


def settings_for(repository: Path = REPOSITORY, **overrides: object) -> Settings:
    """Settings built directly (no environment), one ORT thread, an event store of their own
    (an SQLite file in a fresh temporary folder)."""
    store = f"sqlite:///{tempfile.mkdtemp(prefix='hydrarec-state-')}/events.db"
    values: dict[str, object] = {
        "model_dir": repository,
        "ort_threads": 1,
        "store_url": store,
        **overrides,
    }
    return Settings.model_validate(values)


@pytest.fixture(scope="session")
def artifact() -> Artifact:
    return load_artifact(REPOSITORY, DEFAULT_MODEL)


@pytest.fixture(scope="module")
def client() -> Iterator[TestClient]:
    """The app serving the committed default model, lifespan entered (ready)."""
    with TestClient(create_app(settings_for())) as c:
        yield c


@pytest.fixture
def repository_copy(tmp_path: Path, artifact: Artifact) -> Path:
    """A model repository holding a copy of the default artifact, free to tamper with."""
    target = tmp_path / "models" / DEFAULT_MODEL / artifact.path.name
    shutil.copytree(artifact.path, target)
    return tmp_path / "models"


def publish_copy(repository: Path, source: Path, version: int, damaged: bool = False) -> Path:
    """A copy of the artifact at `source` as `version`, renamed into place only when complete
    (as training publishes), so a polling service never sees half of it; `damaged`: its model
    file no longer matches the manifest."""
    from service.artifact import Manifest, write_manifest
    from service.repository import publish

    staging = repository / DEFAULT_MODEL / f".staging-{version}"
    shutil.copytree(source, staging)
    manifest = Manifest.model_validate_json((staging / "manifest.json").read_text())
    write_manifest(staging, manifest.model_copy(update={"version": version}))
    if damaged:
        with (staging / "model.onnx").open("ab") as f:
            f.write(b"\0")
    return publish(staging, repository / DEFAULT_MODEL / str(version))
