"""Do the tasks pull the shared network the same way? The cosine similarity of each pair of task
losses' gradients on the parameters every task reads (the history encoder and the block's shared
experts), probed on a few batches per epoch and recorded in the training report.

A cosine near 1: the tasks ask the shared parameters for the same change (one helps the other);
near 0: they ask for unrelated changes; below 0: they conflict, the situation gradient surgery
(Yu et al., PCGrad, NeurIPS 2020, https://arxiv.org/abs/2001.06782) and PLE's task-specific
experts address.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from training.network.multitask import task_parameters
from training.network.recommender import MultiTaskRecommender

PREFIX = "grad_cosine/"  # epoch figures: grad_cosine/<task a>/<task b>


def shared_parameters(model: MultiTaskRecommender) -> list[nn.Parameter]:
    """The history encoder's parameters and the block's that no task owns alone (a shared
    bottom: all; MMoE: the experts; PLE: every expert and gate below the top level's own)."""
    own = {id(p) for i in range(len(model.tasks)) for p in task_parameters(model.block, i)}
    block = [p for p in model.block.parameters() if id(p) not in own]
    return [p for p in [*model.encoder.parameters(), *block] if p.requires_grad]


def gradient_cosines(
    losses: Mapping[str, Tensor], params: Sequence[nn.Parameter]
) -> dict[str, float]:
    """`grad_cosine/<a>/<b>` for each pair of the tasks (in the given order) whose loss has a
    gradient on `params`; the graph is kept for the backward pass that follows."""
    flat: dict[str, Tensor] = {}
    if not params:
        return {}
    for name, loss in losses.items():
        if not loss.requires_grad:
            continue
        grads = torch.autograd.grad(loss, params, retain_graph=True, allow_unused=True)
        parts = [g.reshape(-1) for g in grads if g is not None]
        if parts and (vector := torch.cat(parts)).norm() > 0:
            flat[name] = vector
    names = list(flat)
    return {
        f"{PREFIX}{a}/{b}": F.cosine_similarity(flat[a], flat[b], dim=0).item()
        for i, a in enumerate(names)
        for b in names[i + 1 :]
    }


class CosineProbe:
    """Probes every `interval`-th batch of an epoch and averages each pair's cosines."""

    def __init__(self, model: MultiTaskRecommender, batches: int, n_batches: int) -> None:
        """Args:
        model: the network being trained.
        batches: batches to probe per epoch (optim.grad_cosine_batches; 0 = none).
        n_batches: the epoch's batches.
        """
        self.params = shared_parameters(model) if batches else []
        # nothing shared (a mean encoder under a block of the tasks' own parameters): no probe
        self.interval = max(1, n_batches // batches) if batches and self.params else 0
        self.sums: dict[str, float] = {}
        self.counts: dict[str, int] = {}

    def wants(self, step: int) -> bool:
        """Whether batch `step` (1-based) is probed."""
        return bool(self.interval) and step % self.interval == 0

    def probe(self, losses: Mapping[str, Tensor]) -> None:
        """Add one batch's cosines (only the tasks with labels in it)."""
        for key, value in gradient_cosines(losses, self.params).items():
            self.sums[key] = self.sums.get(key, 0.0) + value
            self.counts[key] = self.counts.get(key, 0) + 1

    def figures(self) -> dict[str, float]:
        """The epoch's mean cosine of each pair probed."""
        return {key: total / self.counts[key] for key, total in self.sums.items()}
