"""Export to ONNX with a verified manifest (DESIGN.md "The artifact contract").

One path only: `torch.onnx.export(..., dynamo=True)` with explicit dynamic shapes (B users,
N candidates; L is fixed and recorded in the manifest), then `onnx.checker`, then an onnxruntime
parity check against torch on real test batches and on a batch of one user with one candidate.
Everything is written into a staging folder that is renamed into `models/<name>/<version>/` only
when complete, so a crash never leaves a half artifact the service could pick up.
"""

from __future__ import annotations

import logging
import shutil
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import torch
from torch import Tensor, nn

from service.artifact import (
    CONTENT_FILE,
    FIRST_ID,
    MODEL_FILE,
    PAD,
    QUERY_OUTPUT,
    UNK,
    USER_STATE_OUTPUT,
    CatalogueSpec,
    write_manifest,
)
from service.repository import list_versions, publish, verify_folder
from training.data.content import ItemContent
from training.data.vocab import Vocab
from training.network.heads import to_output
from training.network.recommender import MultiTaskRecommender
from training.publish.content_export import TABLES, check_tables, export_content
from training.publish.manifest import build_manifest, narrowest_window
from training.publish.onnx_file import write_onnx
from training.publish.retrieval import write_retrieval

PARITY_TOLERANCE = 1e-4  # max abs difference between torch and onnxruntime outputs
# int8 weights move some probabilities a lot (up to 0.157 over 1,000 test events of the
# MovieLens-100K default model, typically ~0.02): the check then only guards against a broken
# graph, and the quantised graph's own protocol metrics say what quality it costs
QUANTIZED_TOLERANCE = 0.25
QUANTIZATIONS = ("int8",)
INPUT_NAMES = ("user_id", "history", "candidate", "candidate_row")


class ExportError(RuntimeError):
    """The exported graph is invalid or disagrees with torch."""


class ExportWrapper(nn.Module):
    """Named int64 inputs in, one output per task (probabilities) out, in task order, then the
    retrieval query [B, d] when the model has a retrieval score (`retrieval_task`).

    With `precomputed`, items are looked up in tables holding one row per item index (the
    catalogue: `item_table`, `profile_table`), computed once here, so the graph runs no content
    encoder and `catalogue` can append rows; without, the model computes them (the reference
    the parity check compares the graph with).
    """

    def __init__(self, model: MultiTaskRecommender, precomputed: bool = True) -> None:
        super().__init__()
        self.model = model.eval()
        self.precomputed = precomputed
        with torch.no_grad():
            item, profile = model.item_tables()
        self.register_buffer(TABLES["item"], item)  # [n_items, d]
        self.register_buffer(TABLES["profile"], profile)  # [n_items, d] or None
        self.eval()

    def forward(
        self, user_id: Tensor, history: Tensor, candidate: Tensor, candidate_row: Tensor
    ) -> tuple[Tensor, ...]:
        tables = (self.item_table, self.profile_table) if self.precomputed else None
        query = self.model.retrieval_task is not None
        logits = self.model(user_id, history, candidate, candidate_row, tables=tables, query=query)
        outputs = tuple(to_output(t, logits[t.name]) for t in self.model.tasks)
        return (*outputs, logits[QUERY_OUTPUT], logits[USER_STATE_OUTPUT]) if query else outputs


def output_names(model: MultiTaskRecommender) -> list[str]:
    """The graph's outputs: the tasks, then the query and the user state when the model
    retrieves."""
    retrieval = [QUERY_OUTPUT, USER_STATE_OUTPUT] if model.retrieval_task is not None else []
    return [t.name for t in model.tasks] + retrieval


def export_onnx(model: MultiTaskRecommender, path: Path, example: dict[str, Tensor]) -> None:
    """Write the model as ONNX with dynamic B and N; raise ExportError if the checker fails."""
    wrapper = ExportWrapper(model)
    users, candidates = torch.export.Dim("B"), torch.export.Dim("N")
    history: dict[int, Any] = {0: users}
    if (narrowest := narrowest_window(model)) is not None:
        history[1] = torch.export.Dim("L", min=narrowest, max=model.history_length)
    dynamic = {
        "user_id": {0: users},
        "history": history,
        "candidate": {0: candidates},
        "candidate_row": {0: candidates},
    }
    try:
        write_onnx(
            wrapper,
            tuple(example[n] for n in INPUT_NAMES),
            path,
            INPUT_NAMES,
            output_names(model),
            dynamic,
        )
    except onnx.checker.ValidationError as e:
        raise ExportError(f"onnx.checker rejected the exported graph: {e}") from None


def quantize_int8(path: Path) -> None:
    """Replace the graph at `path` by its onnxruntime dynamic int8 quantisation (int8 weights,
    activations quantised on the fly), checked again by onnx.checker."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    quantized = path.with_suffix(".int8.onnx")
    logging.getLogger().setLevel(logging.ERROR)  # its advice to pre-process the float graph
    quantize_dynamic(path, quantized, weight_type=QuantType.QInt8)
    quantized.replace(path)
    try:
        onnx.checker.check_model(str(path), full_check=True)
    except onnx.checker.ValidationError as e:
        raise ExportError(f"onnx.checker rejected the quantised graph: {e}") from None


def parity(
    model: MultiTaskRecommender,
    path: Path,
    inputs: Sequence[dict[str, Tensor]],
    tasks_only: bool = False,
) -> float:
    """Max abs difference between torch and onnxruntime over every output of every batch
    (`tasks_only`: the task outputs, not the retrieval's, whose scale no tolerance fits). A
    graph that takes narrower windows is also run on each batch's last `narrowest_window`
    positions, against torch on the full window with the positions before them padding."""
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    wrapper = ExportWrapper(model, precomputed=False)
    narrow = narrowest_window(model)
    if narrow is not None:
        inputs = [*inputs, *(_narrowed(batch, narrow) for batch in inputs)]
    worst = 0.0
    with torch.no_grad():
        for batch in inputs:
            expected = wrapper(*(batch[n] for n in INPUT_NAMES))
            feed = {n: batch[n].numpy() for n in INPUT_NAMES}
            if "window" in batch:
                feed["history"] = batch["window"].numpy()
            got = session.run(None, feed)
            n = len(model.tasks) if tasks_only else len(got)
            for e, g in zip(expected[:n], got[:n], strict=True):
                if e.shape != g.shape:
                    raise ExportError(f"output shape {g.shape} != torch's {tuple(e.shape)}")
                worst = max(worst, float(np.max(np.abs(e.numpy() - g), initial=0.0)))
    return worst


def _narrowed(batch: dict[str, Tensor], width: int) -> dict[str, Tensor]:
    """The batch with every position before the last `width` padding (torch's input), and
    those last positions alone as the graph's `window`."""
    padded = batch["history"].clone()
    padded[:, :-width] = PAD
    return batch | {"history": padded, "window": padded[:, -width:].contiguous()}


def export_artifact(
    model: MultiTaskRecommender,
    vocabs: dict[str, Vocab],
    content: ItemContent,
    parity_inputs: Sequence[dict[str, Tensor]],
    repository: Path,
    name: str,
    details: dict[str, object],
    version: int | None = None,
    quantize: str | None = None,
    describe: Callable[[Path], dict[str, object]] | None = None,
) -> Path:
    """Export, check, describe and publish `repository/<name>/<version>/`.

    Args:
        model: The trained network.
        vocabs: {"user_id": ..., "item_id": ...}.
        content: The item content the model was trained with (features, token vocabularies).
        parity_inputs: Graph inputs to compare torch and onnxruntime on (the first is the example).
        repository: The model repository (`models/`).
        name: Model name (folder).
        details: `metrics`, `baselines` and `training` (the config) for the manifest.
        version: Version to write; default the highest existing + 1.
        quantize: None (float32) or "int8" (dynamic quantisation; parity is then held to
            QUANTIZED_TOLERANCE instead of PARITY_TOLERANCE).
        describe: Called with the staged graph; what it returns is added to `details` (the
            metrics of a quantised graph are its own, not the float model's).

    Returns:
        The published folder.

    Raises:
        ExportError: checker failure or parity above the tolerance (nothing is published).
    """
    model_dir = repository / name
    model_dir.mkdir(parents=True, exist_ok=True)
    version = version or (max(list_versions(model_dir), default=0) + 1)
    staging = model_dir / f".staging-{uuid.uuid4().hex}"
    staging.mkdir()
    try:
        export_onnx(model, staging / MODEL_FILE, parity_inputs[0])
        if quantize == "int8":
            quantize_int8(staging / MODEL_FILE)
        elif quantize is not None:
            raise ExportError(f"unknown quantisation {quantize!r}; one of {QUANTIZATIONS}")
        # int8 moves the query as it moves every output; its figures are its own metrics
        diff = parity(model, staging / MODEL_FILE, parity_inputs, tasks_only=bool(quantize))
        catalogue, content_diff = _catalogue(model, content, staging, quantize)
        diff = max(diff, content_diff)
        tolerance = PARITY_TOLERANCE if quantize is None else QUANTIZED_TOLERANCE
        if diff > tolerance:
            raise ExportError(
                f"onnxruntime differs from torch by {diff:.3g} (> {tolerance}); not publishing"
            )
        if describe is not None:
            details = details | describe(staging / MODEL_FILE)
        vocabs = vocabs | content.fitted.tokens
        for key, vocab in vocabs.items():
            vocab.save(staging / "vocab" / f"{key}.txt")
        retrieval, rank_diff = write_retrieval(model, staging, parity_inputs)
        if rank_diff > PARITY_TOLERANCE:
            raise ExportError(f"the rank graph differs from torch by {rank_diff:.3g}")
        details = details | {"catalogue": catalogue, "retrieval": retrieval}
        write_manifest(staging, build_manifest(model, vocabs, name, version, diff, details))
        target = publish(staging, model_dir / str(version))
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    verify_folder(target)
    return target


def _catalogue(
    model: MultiTaskRecommender, content: ItemContent, staging: Path, quantize: str | None
) -> tuple[CatalogueSpec, float]:
    """Export the content graph (with item features) and describe the catalogue; the content
    graph's parity with torch."""
    n_trained = int((model.items.id_row[FIRST_ID:] != UNK).sum())
    if not content.fitted.specs:
        return CatalogueSpec(n_trained=n_trained), 0.0
    try:
        diff = export_content(model, content, staging / CONTENT_FILE)
        tables = (
            check_tables(
                staging / MODEL_FILE, model.items.spec.n_items, model.profile_embedding is not None
            )
            if quantize is None
            else {}  # quantised tables cannot be extended: `catalogue` refuses such a version
        )
    except (onnx.checker.ValidationError, RuntimeError) as e:
        raise ExportError(f"content graph: {e}") from None
    spec = CatalogueSpec(
        features=content.fitted.specs,
        content_graph=CONTENT_FILE,
        tables=tables,
        n_trained=n_trained,
    )
    return spec, diff
