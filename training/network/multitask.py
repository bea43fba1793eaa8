"""Multi-task blocks: a user vector [B, D_in] -> one representation [B, D] per task.

Every block has the same constructor `(d_in, n_tasks, spec)` and the same
`forward(x) -> list[Tensor]`, and is registered in ARCHITECTURES, so the recommender, the config
validation and the tests all pick blocks by name. PLE joins this registry in a later change.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from training.network.layers import MLP


@dataclass(frozen=True)
class BlockSpec:
    """Shared hyper-parameters of the multi-task blocks."""

    d_hidden: int = 64  # D
    n_experts: int = 4  # E (MMoE)
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
        self.experts = nn.ModuleList(
            MLP(d_in, (spec.d_hidden,), dropout=spec.dropout) for _ in range(spec.n_experts)
        )
        self.gates = nn.ModuleList(nn.Linear(d_in, spec.n_experts) for _ in range(n_tasks))

    def forward(self, x: Tensor) -> list[Tensor]:
        experts = torch.stack([e(x) for e in self.experts], dim=1)  # [B, E, D]
        return [
            (gate(x).softmax(dim=-1).unsqueeze(-1) * experts).sum(dim=1)  # [B, D]
            for gate in self.gates
        ]


ARCHITECTURES: dict[str, type[nn.Module]] = {
    "shared_bottom": SharedBottom,
    "mmoe": MMoE,
}
