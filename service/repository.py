"""The model repository on disk: `<dir>/<name>/<version>/` folders, found, verified, published.

Training publishes a version by renaming a complete folder into place (`publish`); a version
copied in by other means (`cp`, `docker cp`, rsync) may be seen half-copied, so what a rejection
remembers is the folder's content (`fingerprint`), never a modification time those tools keep.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from pathlib import Path

from pydantic import ValidationError

from service.artifact import (
    MANIFEST_FILE,
    MODEL_FILE,
    SUPPORTED_SCHEMAS,
    Artifact,
    ArtifactError,
    Manifest,
    sha256_file,
)

_VERSION = re.compile(r"[1-9][0-9]*")  # ASCII digits only: '²'.isdigit() is True, int() fails


def publish(staging: Path, target: Path) -> Path:
    """Move a complete staging folder to `target` in one rename (same filesystem).

    A crash before the rename leaves only the staging folder, never a half artifact.
    """
    if target.exists():
        raise ArtifactError(f"{target} already exists; versions are never overwritten")
    os.replace(staging, target)
    return target


def list_versions(model_dir: Path) -> list[int]:
    """Numeric version folders of one model, ascending (Triton rules: '01', 'tmp', '²' ignored)."""
    if not model_dir.is_dir():
        return []
    return sorted(
        int(p.name) for p in model_dir.iterdir() if p.is_dir() and _VERSION.fullmatch(p.name)
    )


def fingerprint(folder: Path) -> str:
    """What a version folder holds now: the manifest's bytes and every file's name and size.

    A folder that is still being copied changes its fingerprint as files arrive or grow, so a
    version rejected half-copied is tried again once it is complete.
    """
    digest = hashlib.sha256()
    try:
        digest.update((folder / MANIFEST_FILE).read_bytes())
    except OSError:
        digest.update(b"no manifest")
    for path in sorted(folder.rglob("*")) if folder.is_dir() else ():
        try:
            size = path.stat().st_size if path.is_file() else -1
        except OSError:  # removed while listed
            size = -2
        digest.update(f"{path.relative_to(folder).as_posix()}\0{size}\n".encode())
    return digest.hexdigest()


def load_artifact(repository: Path, name: str, version: int | None = None) -> Artifact:
    """Find and verify `repository/<name>/<version>/` (the highest version if None).

    Raises:
        ArtifactError: naming exactly what is missing, unreadable, of another schema or tampered.
    """
    model_dir = repository / name
    versions = list_versions(model_dir)
    if not versions:
        raise ArtifactError(f"no model versions in {model_dir} (expected numeric folders)")
    if version is None:
        version = versions[-1]
    elif version not in versions:
        raise ArtifactError(f"version {version} not found in {model_dir}; have {versions}")
    return verify_folder(model_dir / str(version))


def verify_folder(folder: Path) -> Artifact:
    """Parse and verify one artifact folder: schema version, name/version vs path, hashes."""
    manifest = _read_manifest(folder)
    if manifest.name != folder.parent.name or str(manifest.version) != folder.name:
        raise ArtifactError(
            f"{folder}: manifest says {manifest.name}/{manifest.version}, "
            f"folder is {folder.parent.name}/{folder.name}"
        )
    required = [MODEL_FILE, *(v.file for v in manifest.vocabularies.values())]
    if manifest.catalogue.content_graph is not None:
        required.append(manifest.catalogue.content_graph)
    if manifest.retrieval is not None:
        required += [manifest.retrieval.item_vectors, manifest.retrieval.rank_graph]
    for rel in required:
        if rel not in manifest.files:
            raise ArtifactError(f"{folder}: {rel} is not hashed in the manifest")
    for rel, expected in manifest.files.items():
        path = folder / rel
        if not path.is_file():
            raise ArtifactError(f"{folder}: {rel} is listed in the manifest but missing")
        if sha256_file(path) != expected:
            raise ArtifactError(f"{folder}: sha256 of {rel} does not match the manifest")
    return Artifact(path=folder, manifest=manifest)


def _read_manifest(folder: Path) -> Manifest:
    path = folder / MANIFEST_FILE
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ArtifactError(f"{folder}: no {MANIFEST_FILE}") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ArtifactError(f"{path}: unreadable ({e})") from None
    found = raw.get("schema_version") if isinstance(raw, dict) else None
    if found not in SUPPORTED_SCHEMAS:
        raise ArtifactError(
            f"{path}: schema_version {found!r} is not supported (this build reads "
            f"{' and '.join(map(str, SUPPORTED_SCHEMAS))}); export the model again with this "
            "version of hydrarec"
        )
    try:
        return Manifest.model_validate(raw)
    except ValidationError as e:
        raise ArtifactError(f"{path}: invalid manifest: {e}") from None
