"""Multi-task blocks: a user vector [B, D_in] -> one representation [B, D] per task.

Every block has the same constructor `(d_in, n_tasks, spec)` and the same
`forward(x) -> list[Tensor]`, and is registered in ARCHITECTURES under a name of
training.config.BLOCKS (the names the config accepts; a test keeps the two equal), so the
recommender, the config validation and the tests all pick blocks by name.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import cast

import torch
from torch import Tensor, nn

from training.network.layers import MLP


@dataclass(frozen=True)
class BlockSpec:
    """Shared hyper-parameters of the multi-task blocks."""

    d_hidden: int = 64  # D
    n_experts: int = 4  # E: MMoE's experts, PLE's shared experts per level
    n_task_experts: int = 1  # PLE: each task's own experts per level
    n_levels: int = 2  # PLE: extraction layers stacked
    dropout: float = 0.1


class SharedBottom(nn.Module):
    """One MLP shared by all tasks (Caruana, Multitask Learning, Machine Learning 1997)."""

    def __init__(self, d_in: int, n_tasks: int, spec: BlockSpec) -> None:
        super().__init__()
        self.n_tasks = n_tasks
        self.bottom = MLP(d_in, (spec.d_hidden,), dropout=spec.dropout)

    def forward(self, x: Tensor) -> list[Tensor]:
        shared = self.bottom(x)  # [B, D]
        return [shared] * self.n_tasks


class MMoE(nn.Module):
    """Multi-gate mixture of experts (Ma et al., KDD 2018, https://doi.org/10.1145/3219819.3220007):
    E expert MLPs shared by all tasks, one softmax gate per task mixing them."""

    def __init__(self, d_in: int, n_tasks: int, spec: BlockSpec) -> None:
        super().__init__()
        self.experts = _experts(d_in, spec.n_experts, spec)
        self.gates = nn.ModuleList(nn.Linear(d_in, spec.n_experts) for _ in range(n_tasks))

    def forward(self, x: Tensor) -> list[Tensor]:
        experts = torch.stack([e(x) for e in self.experts], dim=1)  # [B, E, D]
        return [_mix(gate, x, experts) for gate in self.gates]  # n_tasks x [B, D]


def _experts(d_in: int, n: int, spec: BlockSpec) -> nn.ModuleList:
    return nn.ModuleList(MLP(d_in, (spec.d_hidden,), dropout=spec.dropout) for _ in range(n))


def _mix(gate: nn.Module, x: Tensor, experts: Tensor) -> Tensor:
    """Softmax gate over x mixing experts [B, E, D] into [B, D]."""
    return (gate(x).softmax(dim=-1).unsqueeze(-1) * experts).sum(dim=1)


class CGC(nn.Module):
    """One PLE level, customized gate control (CGC): per task, its own experts plus the shared
    ones, mixed by the task's gate; below the top level a shared gate also mixes every expert
    for the next level."""

    def __init__(self, d_in: int, n_tasks: int, spec: BlockSpec, top: bool) -> None:
        super().__init__()
        n_own, n_shared = spec.n_task_experts, spec.n_experts
        self.own = nn.ModuleList(_experts(d_in, n_own, spec) for _ in range(n_tasks))
        self.shared = _experts(d_in, n_shared, spec)
        self.gates = nn.ModuleList(nn.Linear(d_in, n_own + n_shared) for _ in range(n_tasks))
        self.shared_gate = None if top else nn.Linear(d_in, n_tasks * n_own + n_shared)

    def forward(self, xs: list[Tensor], x_shared: Tensor) -> tuple[list[Tensor], Tensor | None]:
        shared = [e(x_shared) for e in self.shared]
        own = [
            [e(x) for e in cast(nn.ModuleList, experts)]
            for x, experts in zip(xs, self.own, strict=True)
        ]
        outs = [
            _mix(gate, x, torch.stack(mine + shared, dim=1))
            for x, mine, gate in zip(xs, own, self.gates, strict=True)
        ]
        if self.shared_gate is None:
            return outs, None
        every = torch.stack([e for mine in own for e in mine] + shared, dim=1)
        return outs, _mix(self.shared_gate, x_shared, every)


class PLE(nn.Module):
    """Progressive layered extraction (Tang et al., RecSys 2020,
    https://doi.org/10.1145/3383313.3412236): stacked extraction layers that keep task-specific
    and shared experts apart, so tasks that conflict stop pulling on the same units."""

    def __init__(self, d_in: int, n_tasks: int, spec: BlockSpec) -> None:
        super().__init__()
        self.n_tasks = n_tasks
        self.levels = nn.ModuleList(
            CGC(d_in if i == 0 else spec.d_hidden, n_tasks, spec, i == spec.n_levels - 1)
            for i in range(spec.n_levels)
        )

    def forward(self, x: Tensor) -> list[Tensor]:
        xs, shared = [x] * self.n_tasks, x
        for level in self.levels:
            xs, next_shared = level(xs, shared)
            shared = next_shared if next_shared is not None else shared
        return xs


def task_parameters(block: nn.Module, task: int) -> list[nn.Parameter]:
    """The block's parameters that only task `task` reads: its MMoE gate; its gate and own
    experts at PLE's top level (the lower levels' also feed the shared gate); none in a
    shared bottom."""
    if isinstance(block, MMoE):
        return list(block.gates[task].parameters())
    if isinstance(block, PLE):
        top = cast(CGC, block.levels[-1])
        return [*top.gates[task].parameters(), *top.own[task].parameters()]
    return []


ARCHITECTURES: dict[str, type[nn.Module]] = {
    "shared_bottom": SharedBottom,
    "mmoe": MMoE,
    "ple": PLE,
}
