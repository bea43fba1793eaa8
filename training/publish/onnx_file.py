"""One way to write a torch module as an ONNX file, for every graph an artifact holds (the
serving graph, the content graph, the rank graph): the dynamo exporter with explicit dynamic
shapes, weights inside the file, then `onnx.checker`'s full check."""

from __future__ import annotations

import contextlib
import io
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import onnx
import torch
from torch import Tensor, nn


def write_onnx(
    module: nn.Module,
    example: tuple[Tensor, ...],
    path: Path,
    inputs: Sequence[str],
    outputs: Sequence[str],
    dynamic: Any,
) -> None:
    """Export `module` run on `example` to `path` with these input and output names and
    dynamic shapes (torch.export's form), and check the file.

    Raises:
        onnx.checker.ValidationError: the checker rejects the graph.
    """
    with contextlib.redirect_stdout(io.StringIO()):  # the exporter prints its progress
        torch.onnx.export(
            module,
            example,
            str(path),
            input_names=list(inputs),
            output_names=list(outputs),
            dynamic_shapes=dynamic,
            dynamo=True,
            external_data=False,
        )
    onnx.checker.check_model(str(path), full_check=True)
