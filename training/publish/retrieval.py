"""What recommend mode reads beside the graph (service.artifact.RetrievalSpec): the item vectors
file, every catalogue item's row of the graph's item table in vocabulary order, which the service
indexes; and the rank graph, the item heads alone, which ranks the retrieved items from the
graph's user state and their vectors without running the user side again. Written by the export;
`catalogue` extends the vectors with the items it adds (the rank graph holds no item rows)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch
from torch import Tensor, nn

from service.artifact import (
    FIRST_ID,
    ITEM_VECTORS_FILE,
    RANK_GRAPH_FILE,
    USER_STATE_OUTPUT,
    RetrievalSpec,
)
from training.network.heads import to_output
from training.network.recommender import MultiTaskRecommender
from training.publish.onnx_file import write_onnx

RANK_INPUTS = (USER_STATE_OUTPUT, "item", "candidate_row")


class RankWrapper(nn.Module):
    """user_state [B, item tasks, D], item [N, d], candidate_row [N] -> item tasks [N]."""

    def __init__(self, model: MultiTaskRecommender) -> None:
        super().__init__()
        self.model = model.eval()
        self.tasks = [t for t in model.tasks if t.level == "item"]

    def forward(
        self, user_state: Tensor, item: Tensor, candidate_row: Tensor
    ) -> tuple[Tensor, ...]:
        logits = self.model.score_items(list(user_state.unbind(1)), item, candidate_row)
        return tuple(to_output(t, logits[t.name]) for t in self.tasks)


def write_retrieval(
    model: MultiTaskRecommender, folder: Path, parity_inputs: Sequence[dict[str, Tensor]]
) -> tuple[RetrievalSpec | None, float]:
    """The retrieval spec, with the item vectors and the rank graph written under `folder`, and
    the rank graph's largest difference from torch on the parity batches; (None, 0) for a
    model without a retrieval score."""
    if model.retrieval_task is None:
        return None, 0.0
    model.eval()
    with torch.no_grad():
        vectors = model.item_tables()[0][FIRST_ID:].numpy().astype(np.float32)
    path = folder / ITEM_VECTORS_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    np.save(path, vectors, allow_pickle=False)
    examples = [_rank_inputs(model, batch) for batch in parity_inputs]
    _export_rank(model, folder / RANK_GRAPH_FILE, examples[0])
    spec = RetrievalSpec(
        task=model.retrieval_task,
        dim=vectors.shape[1],
        state_dim=examples[0][USER_STATE_OUTPUT].shape[-1],
    )
    return spec, _rank_parity(model, folder / RANK_GRAPH_FILE, examples)


def extend_item_vectors(path: Path, rows: np.ndarray) -> None:
    """Append the vectors of added items (their item table rows) to the file at `path`."""
    old = np.load(path, allow_pickle=False)
    np.save(path, np.concatenate([old, rows.astype(old.dtype)], axis=0), allow_pickle=False)


def _rank_inputs(model: MultiTaskRecommender, batch: dict[str, Tensor]) -> dict[str, Tensor]:
    """The rank graph's inputs for a graph batch: its users' state and its candidates' rows."""
    with torch.no_grad():
        state = model(**batch, query=True)[USER_STATE_OUTPUT]
        item = model.item_tables()[0][batch["candidate"]]
    return {USER_STATE_OUTPUT: state, "item": item, "candidate_row": batch["candidate_row"]}


def _export_rank(model: MultiTaskRecommender, path: Path, example: dict[str, Tensor]) -> None:
    users, candidates = torch.export.Dim("B"), torch.export.Dim("N")
    dynamic = {
        USER_STATE_OUTPUT: {0: users},
        "item": {0: candidates},
        "candidate_row": {0: candidates},
    }
    wrapper = RankWrapper(model)
    names = [t.name for t in wrapper.tasks]
    write_onnx(wrapper, tuple(example[n] for n in RANK_INPUTS), path, RANK_INPUTS, names, dynamic)


def _rank_parity(
    model: MultiTaskRecommender, path: Path, examples: Sequence[dict[str, Tensor]]
) -> float:
    """Max abs difference between the rank graph in onnxruntime and torch."""
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    wrapper = RankWrapper(model)
    worst = 0.0
    with torch.no_grad():
        for example in examples:
            expected = wrapper(*(example[n] for n in RANK_INPUTS))
            got = session.run(None, {n: example[n].numpy() for n in RANK_INPUTS})
            for e, g in zip(expected, got, strict=True):
                worst = max(worst, float(np.max(np.abs(e.numpy() - g), initial=0.0)))
    return worst
