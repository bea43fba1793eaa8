"""The content graph (`content.onnx`): raw features of new items -> their rows of the item tables.

The serving graph looks items up in tables with one row per item index (`item_table`,
`profile_table`, see `export.ExportWrapper`). An item whose id was never trained is represented by
the trained unknown-id vector plus its content, so its rows are a function of its features alone:
this graph computes them. `python -m training catalogue` runs it with onnxruntime on new items
and appends the rows to the serving graph, so new items need neither torch, nor the checkpoint,
nor a retrain. Its parity with torch is checked like the serving graph's.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import torch
from torch import Tensor, nn

from service.artifact import FIRST_ID, UNK
from training.data.content import ItemContent
from training.network.recommender import MultiTaskRecommender
from training.publish.onnx_file import write_onnx

TABLES = {"item": "item_table", "profile": "profile_table"}  # ExportWrapper's buffer names


class ContentGraph(nn.Module):
    """forward(*features of M items, in feature order) -> item rows [M, D] (, profile rows
    [M, D] when the model has user tasks)."""

    def __init__(self, model: MultiTaskRecommender) -> None:
        super().__init__()
        self.items = model.items
        self.profile = model.profile_embedding
        self.columns = [f.column for f in model.items.spec.features]
        self.eval()

    def forward(self, *features: Tensor) -> tuple[Tensor, ...]:
        assert self.items.content is not None, "a model without item features"
        content = self.items.content(dict(zip(self.columns, features, strict=True)))  # [M, D]
        item = self.items.embedding.weight[UNK] + content  # [M, D]
        if self.profile is None:
            return (item,)
        return item, self.profile.weight[UNK].expand_as(item)  # [M, D] each


def content_example(content: ItemContent) -> dict[str, np.ndarray]:
    """The real items' feature arrays (token lists padded to two columns at least, so the
    exporter keeps their width dynamic)."""
    out = {}
    for column, values in content.arrays.items():
        rows = values[FIRST_ID:]
        if rows.ndim == 2 and rows.dtype == np.int64 and rows.shape[1] < 2:
            rows = np.pad(rows, ((0, 0), (0, 2 - rows.shape[1])))
        out[column] = rows
    return out


def output_names(model: MultiTaskRecommender) -> list[str]:
    """The content graph's outputs: one per item table of the serving graph."""
    return ["item"] + (["profile"] if model.profile_embedding is not None else [])


def export_content(model: MultiTaskRecommender, content: ItemContent, path: Path) -> float:
    """Write the content graph with dynamic M (and token widths); return its max abs
    difference against torch on every real item."""
    graph = ContentGraph(model)
    example = content_example(content)
    m = torch.export.Dim("M")
    dynamic = {}
    for f in model.items.spec.features:
        dims = {0: m}
        if f.kind == "multi_categorical":
            dims[1] = torch.export.Dim(f"T_{f.column}")
        dynamic[f.column] = dims
    inputs = tuple(torch.from_numpy(example[c]) for c in graph.columns)
    # one dynamic-shapes entry: the *features tuple
    write_onnx(graph, inputs, path, graph.columns, output_names(model), (tuple(dynamic.values()),))
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = session.run(None, dict(example))
    with torch.no_grad():
        expected = graph(*inputs)
    return max(
        float(np.max(np.abs(e.detach().numpy() - g), initial=0.0))
        for e, g in zip(expected, got, strict=True)
    )


def check_tables(path: Path, n_items: int, profile: bool) -> dict[str, str]:
    """The item tables' initializer names in the serving graph, checked to hold one row per item
    index (a graph exported otherwise cannot take new items)."""
    found = {i.name: list(i.dims) for i in onnx.load(str(path)).graph.initializer}
    wanted = {k: v for k, v in TABLES.items() if profile or k == "item"}
    for name in wanted.values():
        if name not in found or found[name][0] != n_items:
            raise RuntimeError(f"{path.name}: no initializer {name!r} with {n_items} rows")
    return wanted
