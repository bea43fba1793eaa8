"""`python -m training catalogue`: new items into a published model, with the same weights.

An item whose id was never trained is its content: the content graph of the artifact
(`content.onnx`) turns its features into its rows of the serving graph's item tables, which are
appended to a copy of `model.onnx` (the item rows to the retrieval's item vectors too); the item
vocabulary grows by the new ids; the result is published as the next version, which the service
hot-reloads. Nothing is written before every
check passed: the artifact verifies, the items file has the model's feature columns and valid
values, no id is empty, repeated or already in the catalogue, and the new graph gives the known
items exactly the scores the old one gives.
"""

from __future__ import annotations

import shutil
import uuid
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from onnx import numpy_helper

from service.artifact import (
    CONTENT_FILE,
    FIRST_ID,
    MODEL_FILE,
    PAD,
    TOKEN_KINDS,
    Artifact,
    ArtifactError,
    VocabSpec,
    now_iso,
    write_manifest,
    write_vocab,
)
from service.repository import list_versions, publish, verify_folder
from training.data.content import FittedFeatures, encode_features
from training.data.directory import read_table
from training.data.features import check_features, vector_columns
from training.data.raw import Problems, RawTable
from training.data.vocab import Vocab
from training.publish.retrieval import extend_item_vectors

N_CHECK_ITEMS = 200  # known items whose scores must not move
UNCHANGED_TOLERANCE = 1e-6
CHECK_CHUNK = 10_000  # new items scored per graph run by the check


def add_items(model: Path, items: Path, progress: bool = False) -> tuple[Path, list[str]]:
    """Publish `model`'s next version with the items of `items` added to its catalogue.

    Returns:
        The new artifact folder and the columns of the items file the model does not read.

    Raises:
        ArtifactError: the artifact does not verify, has no item features or cannot take items.
        DataError: the items file is unreadable or has bad ids, columns or values.
    """
    artifact = verify_folder(model)
    catalogue = artifact.manifest.catalogue
    if not catalogue.features:
        raise ArtifactError(
            f"{model}: the model has no item features, so a new item would score like an "
            "unknown id; train with [[features]] to add items by content"
        )
    if not catalogue.tables:
        raise ArtifactError(
            f"{model}: its item tables are quantised and cannot take rows; add the items to the "
            "float32 version, then export --quantize"
        )
    table = read_table(items)
    known = artifact.read_vocab("item_id")
    ids = _check(table, artifact, set(known))
    tokens = {
        f.column: Vocab(tuple(artifact.read_vocab(f.column)))
        for f in catalogue.features
        if f.kind in TOKEN_KINDS
    }
    arrays, _ = encode_features(table, FittedFeatures(catalogue.features, tokens), progress)
    content = ort.InferenceSession(str(model / CONTENT_FILE), providers=["CPUExecutionProvider"])
    rows = dict(
        zip([o.name for o in content.get_outputs()], content.run(None, arrays), strict=True)
    )
    return publish_items(artifact, known + ids, rows), _ignored(table, artifact)


def _check(table: RawTable, artifact: Artifact, known: set[str]) -> list[str]:
    """The new ids, after every problem of the file has been reported."""
    problems = Problems()
    if "item_id" not in table.frame.columns:
        problems.add(f"{table.file}: missing column 'item_id'")
        problems.raise_if_any()
    check_features(table, artifact.manifest.catalogue.features, problems)
    ids = table.frame["item_id"].str.strip().tolist()
    first: dict[str, int] = {}
    for i, item in enumerate(ids):
        if not item:
            problems.add(f"{table.where(i, 'item_id')}: empty id")
        elif item in known:
            problems.add(f"{table.where(i, 'item_id')}: {item!r} is already in the catalogue")
        elif item in first:
            problems.add(
                f"{table.where(i, 'item_id')}: duplicate id {item!r} "
                f"(first at {table.where(first[item])})"
            )
        elif "\n" in item or "\r" in item:
            problems.add(f"{table.where(i, 'item_id')}: an id may not contain a line break")
        first.setdefault(item, i)
    if not ids:
        problems.add(f"{table.file}: no items")
    problems.raise_if_any()
    return ids


def _ignored(table: RawTable, artifact: Artifact) -> list[str]:
    read = {"item_id"}
    for f in artifact.manifest.catalogue.features:
        read |= {f.column, *(vector_columns(f) if f.kind == "vector" else ())}
    return [c for c in table.frame.columns if c not in read]


def _extended_graph(artifact: Artifact, rows: dict[str, np.ndarray]) -> onnx.ModelProto:
    graph = onnx.load(str(artifact.path / MODEL_FILE))
    wanted = artifact.manifest.catalogue.tables
    by_name = {i.name: i for i in graph.graph.initializer}
    for key, name in wanted.items():
        if name not in by_name:
            raise ArtifactError(f"{artifact.path}: {MODEL_FILE} has no item table {name!r}")
        old = numpy_helper.to_array(by_name[name])
        new = np.concatenate([old, rows[key].astype(old.dtype)], axis=0)
        by_name[name].CopyFrom(numpy_helper.from_array(new, name))
    return graph


def publish_items(artifact: Artifact, catalogue: list[str], rows: dict[str, np.ndarray]) -> Path:
    """The next version with `catalogue` (old ids, then the new) and its item tables (and item
    vectors) extended by `rows`: the new items' rows of each table ({"item": [n, d], ...}, what
    the content graph computes; `make bench` gives synthetic ones to grow a catalogue)."""
    model_dir = artifact.path.parent
    version = max(list_versions(model_dir), default=0) + 1
    staging = model_dir / f".staging-{uuid.uuid4().hex}"
    shutil.copytree(artifact.path, staging)
    try:
        (staging / "manifest.json").unlink()
        onnx.save(_extended_graph(artifact, rows), str(staging / MODEL_FILE))
        n_new = len(catalogue) - artifact.manifest.vocabularies["item_id"].size
        _check_unchanged(artifact.path / MODEL_FILE, staging / MODEL_FILE, artifact, n_new)
        manifest = artifact.manifest
        vocabularies = dict(manifest.vocabularies)
        vocabularies["item_id"] = VocabSpec(file=vocabularies["item_id"].file, size=len(catalogue))
        write_vocab(staging / vocabularies["item_id"].file, catalogue)
        if manifest.retrieval is not None:  # the added items' vectors: their item table rows
            extend_item_vectors(staging / manifest.retrieval.item_vectors, rows["item"])
        update = {
            "version": version,
            "created_at": now_iso(),
            "vocabularies": vocabularies,
            "training": manifest.training | {"catalogue_from": manifest.version},
        }
        write_manifest(staging, manifest.model_copy(update=update))
        target = publish(staging, model_dir / str(version))
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    verify_folder(target)
    return target


def _check_unchanged(old: Path, new: Path, artifact: Artifact, n_new: int) -> None:
    """Known items score exactly as before; new items get finite outputs."""
    size = artifact.manifest.vocabularies["item_id"].size
    known = np.arange(FIRST_ID, FIRST_ID + min(size, N_CHECK_ITEMS), dtype=np.int64)
    added = np.arange(FIRST_ID + size, FIRST_ID + size + n_new, dtype=np.int64)
    length = artifact.manifest.history_length
    history = np.full((1, length), PAD, dtype=np.int64)
    history[0, -min(length, len(known)) :] = known[-length:]

    def run(session: ort.InferenceSession, candidates: np.ndarray) -> list[np.ndarray]:
        inputs = {
            "user_id": np.array([FIRST_ID], dtype=np.int64),
            "history": history,
            "candidate": candidates,
            "candidate_row": np.zeros(len(candidates), dtype=np.int64),
        }
        return list(session.run(None, inputs))

    old_graph, new_graph = (
        ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]) for path in (old, new)
    )
    before, after = run(old_graph, known), run(new_graph, known)
    worst = max(float(np.max(np.abs(a - b))) for a, b in zip(before, after, strict=True))
    if worst > UNCHANGED_TOLERANCE:
        raise ArtifactError(f"the extended graph moves known items' outputs by {worst:.3g}")
    for start in range(0, len(added), CHECK_CHUNK):
        if not all(
            np.all(np.isfinite(o)) for o in run(new_graph, added[start : start + CHECK_CHUNK])
        ):
            raise ArtifactError("the extended graph gives new items non-finite outputs")
