"""Which experts each task reads: an MMoE or PLE artifact's gate weights, read out of its own
graph (no checkpoint needed) on its split's test events.

Each task's gate is a linear map of the user representation followed by a softmax over the
experts it mixes (training.network.multitask). The exported graph keeps those softmaxes as
nodes; here they are made graph outputs of a copy of the graph, found from the gates' weight
initializers (`model.block.gates.<task>.weight`, PLE: `model.block.levels.<l>.gates.<task>.weight`),
and averaged over the test events' users. Only the gate applications whose output the task's
head reads survive the export, so each task's softmax is the one its answers go through.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort

GATE = re.compile(r"^model\.block\.(?:levels\.(\d+)\.)?gates\.(\d+)\.weight$")


@dataclass(frozen=True)
class Gate:
    """One task's gate at one level: the softmax tensor of the graph that it is."""

    task: str
    level: int  # 0 for MMoE; PLE's extraction level
    tensor: str
    experts: tuple[str, ...]  # what each weight mixes, in order


def find_gates(graph: onnx.ModelProto, tasks: list[str], n_own: int) -> list[Gate]:
    """Every task's gate softmax in the graph, in task and level order.

    Args:
        graph: the artifact's model.onnx.
        tasks: the tasks in manifest order (the order of the block's gates).
        n_own: PLE's task-specific experts per level (their weights come first in each gate).

    Raises:
        ValueError: a gate's weights reach no softmax (not a graph this module can read).
    """
    consumers: dict[str, list[onnx.NodeProto]] = {}
    for node in graph.graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    gates = []
    for init in graph.graph.initializer:
        match = GATE.match(init.name)
        if match is None:
            continue
        level, task = int(match.group(1) or 0), int(match.group(2))
        softmax = _softmax_after(init.name, consumers)
        if softmax is None:
            continue  # a gate whose output no head reads (dropped by the export)
        n_experts = init.dims[0]
        if match.group(1) is None:
            experts = tuple(f"expert {e}" for e in range(n_experts))
        else:
            own = tuple(f"own {e}" for e in range(n_own))
            experts = own + tuple(f"shared {e}" for e in range(n_experts - n_own))
        gates.append(Gate(tasks[task], level, softmax, experts))
    return sorted(gates, key=lambda g: (tasks.index(g.task), g.level))


def _softmax_after(weight: str, consumers: dict[str, list[onnx.NodeProto]]) -> str | None:
    """The output of the first Softmax downstream of the gate's linear map (a few nodes)."""
    frontier = consumers.get(weight, [])
    for _ in range(4):
        for node in frontier:
            if node.op_type == "Softmax":
                return str(node.output[0])
        frontier = [c for node in frontier for out in node.output for c in consumers.get(out, [])]
    return None


def gate_weights(
    graph_file: Path,
    tasks: list[str],
    n_own: int,
    users: Iterable[tuple[np.ndarray, np.ndarray]],
) -> dict[Gate, np.ndarray]:
    """Each gate's mean weight per expert over the user rows of `users` (batches of graph
    inputs `user_id` [B], `history` [B, L]); empty for a graph without gates (shared bottom).

    Args:
        graph_file: an artifact's model.onnx.
        tasks: its tasks in manifest order.
        n_own: PLE's task-specific experts per level (network.n_task_experts).
        users: the user rows to average over.
    """
    graph = onnx.load(str(graph_file))
    gates = find_gates(graph, tasks, n_own)
    if not gates:
        return {}
    for gate in gates:
        graph.graph.output.append(onnx.helper.make_empty_tensor_value_info(gate.tensor))
    session = ort.InferenceSession(graph.SerializeToString(), providers=["CPUExecutionProvider"])
    names = [g.tensor for g in gates]
    sums = [np.zeros(len(g.experts)) for g in gates]
    rows = 0
    empty = np.zeros(0, dtype=np.int64)
    for user_id, history in users:
        feed = {"user_id": user_id, "history": history, "candidate": empty, "candidate_row": empty}
        for total, values in zip(sums, session.run(names, feed), strict=True):
            total += values.astype(np.float64).sum(axis=0)
        rows += len(user_id)
    return {gate: total / max(rows, 1) for gate, total in zip(gates, sums, strict=True)}
