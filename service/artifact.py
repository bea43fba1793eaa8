"""The artifact contract shared by training and serving: manifest schema, writer and loader.

One definition of every field (DESIGN.md "The artifact contract"): training imports this module to
write `models/<name>/<version>/manifest.json`; the service imports it to find, verify and describe
the model it serves. Stdlib and pydantic only, so the service never pulls in torch.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal, Self

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

# 2: item content (the catalogue: item features, the content encoder graph, content-only items)
SCHEMA_VERSION = 2
MANIFEST_FILE = "manifest.json"
MODEL_FILE = "model.onnx"
CONTENT_FILE = "content.onnx"  # the content encoder: raw item features -> item table rows
PAD = 0  # index of history padding
UNK = 1  # index of an id missing from the vocabulary
FIRST_ID = 2  # index of the first real id

TaskLevel = Literal["item", "user"]
TaskKind = Literal["binary", "multiclass", "multilabel", "regression"]
FeatureKind = Literal["categorical", "multi_categorical", "numeric", "text", "vector"]
TOKEN_KINDS = ("categorical", "multi_categorical")  # token ids through a token vocabulary
DEFAULT_TEXT_ENCODER = "all-MiniLM-L6-v2"
_NAME = re.compile(r"^[a-z][a-z0-9_]{0,31}$")
_COLUMN = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")


class ArtifactError(Exception):
    """An artifact is missing, incomplete, tampered with or of another schema."""


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class TaskSpec(_Frozen):
    """One task: its name is its ONNX output, manifest key, response key and metric label.

    Item tasks are answered per candidate (output float32 [N]); user tasks once per user
    (output float32 [B, K], K = len(classes)).

    Attributes:
        name: Identifier, lowercase.
        level: `item` or `user`.
        kind: `binary` | `regression` (item level) or `multiclass` | `multilabel` (user level).
        column: Label column: in `interactions` for item tasks (None = the interaction itself:
            positives 1, sampled negatives 0), in `users` for user tasks.
        classes: Class labels of a user task; empty in a config means "take them from the data".
        weight: The task's lambda in the joint loss.
        threshold: Binary item task on a numeric column: label = value >= threshold.
        bins: Multiclass user task on a numeric column: upper-exclusive class boundaries.
        separator: Multilabel user task: the separator of the labels inside one cell.
    """

    name: str
    level: TaskLevel
    kind: TaskKind
    column: str | None = None
    classes: tuple[str, ...] = ()
    weight: float = Field(default=1.0, ge=0.0, allow_inf_nan=False)
    threshold: float | None = None
    bins: tuple[float, ...] | None = None
    separator: str = "|"

    @model_validator(mode="after")
    def _check(self) -> Self:
        if not _NAME.match(self.name):
            raise ValueError(f"task name {self.name!r} must match {_NAME.pattern}")
        if self.level == "item" and self.kind not in ("binary", "regression"):
            raise ValueError(f"task {self.name!r}: item tasks are binary or regression")
        if self.level == "user" and self.kind not in ("multiclass", "multilabel"):
            raise ValueError(f"task {self.name!r}: user tasks are multiclass or multilabel")
        if self.level == "user" and not self.column:
            raise ValueError(f"task {self.name!r}: a user task needs a label column")
        if self.kind == "regression" and not self.column:
            raise ValueError(f"task {self.name!r}: a regression task needs a label column")
        if self.threshold is not None and (self.kind != "binary" or not self.column):
            raise ValueError(f"task {self.name!r}: threshold applies to binary tasks on a column")
        if self.kind == "binary" and self.column and self.threshold is None:
            raise ValueError(f"task {self.name!r}: a binary task on a column needs a threshold")
        if self.bins is not None:
            if self.kind != "multiclass":
                raise ValueError(f"task {self.name!r}: bins apply to multiclass tasks")
            if list(self.bins) != sorted(set(self.bins)):
                raise ValueError(f"task {self.name!r}: bins must be strictly increasing")
            if len(self.classes) != len(self.bins) + 1:
                raise ValueError(
                    f"task {self.name!r}: {len(self.bins)} bins need "
                    f"{len(self.bins) + 1} classes, got {len(self.classes)}"
                )
        if len(set(self.classes)) != len(self.classes):
            raise ValueError(f"task {self.name!r}: duplicate class labels")
        return self


class FeatureSpec(_Frozen):
    """One item feature: a column of the items table and how it becomes part of an item's vector.

    Attributes:
        column: Column of the items table (also the content graph's input name).
        kind: `categorical` (one token), `multi_categorical` (tokens split by `separator`,
            masked-mean pooled), `numeric` (standardised; missing -> a learned input), `text`
            (embedded by the sentence encoder `encoder`), `vector` (`dim` floats: a list column
            in Parquet, `<column>_0..<column>_{dim-1}` columns in CSV).
        separator: Token separator of a multi_categorical cell.
        dim: Width of a vector feature (required); of a text feature, the encoder's (set by
            training).
        encoder: Text only: a registered encoder name or a local sentence-transformers folder.
        shuffled: An experiment control: the column's values permuted across items, so it keeps
            its distribution and loses what it says about each item.
        mean: Numeric only, set by training: the mean used to standardise.
        std: Numeric only, set by training: the standard deviation used to standardise.
        encoder_sha256: Text only, set by training: sha256 over the encoder's files.
    """

    column: str
    kind: FeatureKind
    separator: str = "|"
    dim: int | None = Field(default=None, ge=1)
    encoder: str = DEFAULT_TEXT_ENCODER
    shuffled: bool = False
    mean: float | None = None
    std: float | None = Field(default=None, gt=0.0)
    encoder_sha256: str | None = None

    @model_validator(mode="after")
    def _check(self) -> Self:
        if not _COLUMN.match(self.column):
            raise ValueError(f"feature column {self.column!r} must match {_COLUMN.pattern}")
        if self.column in ("item_id", "user_id"):
            raise ValueError(f"feature column {self.column!r} is an id, not content")
        if self.kind == "vector" and self.dim is None:
            raise ValueError(f"feature {self.column!r}: a vector feature needs dim")
        if self.kind == "multi_categorical" and not self.separator:
            raise ValueError(f"feature {self.column!r}: separator must not be empty")
        return self


class CatalogueSpec(_Frozen):
    """The items the graph knows: every item of the items table, with or without interactions.

    Item index i (vocabulary `item_id`) has row i of the graph's item tables; an item whose id
    was never trained (no training interaction, or added by `python -m training catalogue`) is
    represented by the trained unknown-id vector plus its content.

    Attributes:
        features: The item features the content encoder reads, in input order.
        content_graph: The content encoder graph (features -> item table rows), or None for a
            model without item features.
        tables: Graph initializers holding one row per item index ({"item": ..., "profile":
            ...}); `catalogue` appends rows to them.
        n_trained: Items (from index FIRST_ID on) whose id embedding was trained.
    """

    features: tuple[FeatureSpec, ...] = ()
    content_graph: str | None = None
    tables: dict[str, str] = {}
    n_trained: int = Field(default=0, ge=0)

    @model_validator(mode="after")
    def _check(self) -> Self:
        columns = [f.column for f in self.features]
        if len(set(columns)) != len(columns):
            raise ValueError("feature columns must be unique")
        if bool(self.features) != (self.content_graph is not None):
            raise ValueError("a content graph goes with item features, and only with them")
        return self


class TensorSpec(_Frozen):
    """A named graph input or output; symbolic dims are strings (B users, N candidates)."""

    name: str
    dtype: Literal["int64", "float32"]
    shape: tuple[int | str, ...]


class VocabSpec(_Frozen):
    """A vocabulary file: line i (0-based) holds the id whose index is FIRST_ID + i."""

    file: str
    size: int = Field(ge=0)


class RankingSpec(_Frozen):
    """Default ranking: score = sum over item tasks of weight * probability; keep top_k."""

    weights: dict[str, float]
    top_k: int = Field(default=10, ge=1)


class Manifest(_Frozen):
    """Everything the service needs to serve a model, and what it needs to trust it."""

    schema_version: int
    name: str
    version: int = Field(ge=1)
    created_at: str
    tasks: tuple[TaskSpec, ...]
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    history_length: int = Field(ge=1)
    pad_index: int = PAD
    unknown_index: int = UNK
    vocabularies: dict[str, VocabSpec]
    ranking: RankingSpec
    catalogue: CatalogueSpec = CatalogueSpec()
    metrics: dict[str, float | None] = {}  # None: undefined on this data (e.g. AUC of one class)
    baselines: dict[str, float | None] = {}
    parity_max_abs_diff: float
    training: dict[str, object] = {}
    files: dict[str, str] = {}

    @field_validator("metrics", "baselines", mode="after")
    @classmethod
    def _nan_is_none(cls, values: dict[str, float | None]) -> dict[str, float | None]:
        return {k: v if v is not None and math.isfinite(v) else None for k, v in values.items()}

    @model_validator(mode="after")
    def _check(self) -> Self:
        names = [t.name for t in self.tasks]
        if len(set(names)) != len(names):
            raise ValueError("task names must be unique")
        if [o.name for o in self.outputs] != names:
            raise ValueError("outputs must be the tasks, in task order")
        item_tasks = {t.name for t in self.tasks if t.level == "item"}
        if set(self.ranking.weights) - item_tasks:
            raise ValueError("ranking weights must name item tasks")
        if (self.pad_index, self.unknown_index) != (PAD, UNK):
            raise ValueError(f"index convention must be pad={PAD}, unknown={UNK}")
        items = self.vocabularies.get("item_id")
        if items is not None and self.catalogue.n_trained > items.size:
            raise ValueError("catalogue.n_trained exceeds the item vocabulary")
        for f in self.catalogue.features:
            if f.kind in TOKEN_KINDS and f.column not in self.vocabularies:
                raise ValueError(f"feature {f.column!r} has no token vocabulary")
        return self

    def task(self, name: str) -> TaskSpec:
        """The task called `name`."""
        return next(t for t in self.tasks if t.name == name)


class Artifact(_Frozen):
    """A verified artifact folder and its manifest."""

    path: Path
    manifest: Manifest

    def read_vocab(self, name: str) -> list[str]:
        """Ids of vocabulary `name`, in index order (index = FIRST_ID + position)."""
        return read_vocab(self.path / self.manifest.vocabularies[name].file)


def now_iso() -> str:
    """UTC timestamp for `created_at`."""
    return datetime.now(UTC).isoformat(timespec="seconds")


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def write_vocab(path: Path, ids: list[str]) -> None:
    """Write ids one per line; ids may not contain line breaks."""
    if any("\n" in i or "\r" in i for i in ids):
        raise ValueError(f"{path.name}: ids must not contain line breaks")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(f"{i}\n" for i in ids), encoding="utf-8")


def read_vocab(path: Path) -> list[str]:
    """Read a vocabulary file written by `write_vocab`."""
    return path.read_text(encoding="utf-8").splitlines()


def write_manifest(folder: Path, manifest: Manifest) -> Manifest:
    """Hash every file under `folder`, then write manifest.json there.

    Args:
        folder: The (staging) artifact folder, holding model.onnx and the vocab files.
        manifest: The manifest; its `files` are replaced by the hashes found.

    Returns:
        The manifest as written.
    """
    files = {
        p.relative_to(folder).as_posix(): sha256_file(p)
        for p in sorted(folder.rglob("*"))
        if p.is_file() and p.name != MANIFEST_FILE
    }
    if MODEL_FILE not in files:
        raise ArtifactError(f"{folder}: no {MODEL_FILE} to describe")
    final = manifest.model_copy(update={"files": files})
    (folder / MANIFEST_FILE).write_text(final.model_dump_json(indent=2) + "\n", encoding="utf-8")
    return final


def publish(staging: Path, target: Path) -> Path:
    """Move a complete staging folder to `target` in one rename (same filesystem).

    A crash before the rename leaves only the staging folder, never a half artifact.
    """
    if target.exists():
        raise ArtifactError(f"{target} already exists; versions are never overwritten")
    os.replace(staging, target)
    return target


def list_versions(model_dir: Path) -> list[int]:
    """Numeric version folders of one model, ascending (Triton rules: '01', 'tmp' ignored)."""
    if not model_dir.is_dir():
        return []
    return sorted(
        int(p.name)
        for p in model_dir.iterdir()
        if p.is_dir() and p.name.isdigit() and not p.name.startswith("0")
    )


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
    if MODEL_FILE not in manifest.files:
        raise ArtifactError(f"{folder}: manifest lists no {MODEL_FILE}")
    graph = manifest.catalogue.content_graph
    if graph is not None and graph not in manifest.files:
        raise ArtifactError(f"{folder}: content graph {graph} is not hashed in the manifest")
    for vocab in manifest.vocabularies.values():
        if vocab.file not in manifest.files:
            raise ArtifactError(f"{folder}: vocabulary {vocab.file} is not hashed in the manifest")
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
    if found != SCHEMA_VERSION:
        raise ArtifactError(
            f"{path}: schema_version {found!r} is not supported (this build reads "
            f"{SCHEMA_VERSION}); export the model again with this version of hydrarec"
        )
    try:
        return Manifest.model_validate(raw)
    except ValidationError as e:
        raise ArtifactError(f"{path}: invalid manifest: {e}") from None
