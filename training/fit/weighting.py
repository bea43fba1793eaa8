"""How the task losses become one: fixed lambdas, learned uncertainty, or GradNorm.

Every scheme takes the per-task losses of a batch (each already averaged over the rows that have
the label) and the names of the tasks that had any label in it, runs the backward pass, and says
which weight each task currently gets, so the trajectories can be logged and plotted.

- `fixed`: sum_i lambda_i * L_i (lambda from the config; DESIGN.md's joint loss).
- `uncertainty` (Kendall et al., CVPR 2018, https://arxiv.org/abs/1705.07115): a learned
  log-variance s_i per task, sum_i lambda_i * (exp(-s_i) * L_i + s_i / 2); lambda stays a prior.
- `gradnorm` (Chen et al., ICML 2018, https://arxiv.org/abs/1711.02257): weights w_i moved so that
  each task's gradient norm on the shared block tracks its relative training rate, renormalised
  to the lambdas' sum after every step. The norms are taken of dL_i/dW (no second-order pass:
  ||d(w_i L_i)/dW|| = w_i ||dL_i/dW||, so the GradNorm loss is linear in w).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn

from service.artifact import TaskSpec
from training.config import WEIGHTINGS


class FixedWeighting(nn.Module):
    """sum_i lambda_i * L_i."""

    lambdas: Tensor  # [T] the config's weights (a buffer)

    def __init__(self, tasks: Sequence[TaskSpec]) -> None:
        super().__init__()
        self.names = [t.name for t in tasks]
        self.register_buffer("lambdas", torch.tensor([t.weight for t in tasks]))

    def weights(self) -> dict[str, float]:
        """The weight each task's loss gets now."""
        return dict(zip(self.names, self.lambdas.tolist(), strict=True))

    def combine(self, losses: dict[str, Tensor], present: set[str]) -> Tensor:  # noqa: ARG002
        """The scalar to minimise (absent tasks' losses are 0 and add nothing)."""
        return torch.stack(
            [w * losses[n] for n, w in zip(self.names, self.lambdas, strict=True)]
        ).sum()

    def backward(
        self,
        losses: dict[str, Tensor],
        present: set[str],
        shared: Sequence[nn.Parameter],  # noqa: ARG002
    ) -> Tensor:
        """Backward pass of the combined loss; returns it (detached)."""
        total = self.combine(losses, present)
        total.backward()
        return total.detach()

    def step(self) -> None:
        """Update the scheme's own state after the optimiser step (nothing for fixed)."""

    def trained_with_model(self) -> list[nn.Parameter]:
        """Parameters the model's optimiser updates (uncertainty's log-variances)."""
        return []

    def training_state(self) -> dict[str, Any]:
        """What a resumed run needs to go on exactly as this one would (`--resume`)."""
        return {"module": self.state_dict()}

    def load_training_state(self, state: dict[str, Any]) -> None:
        """Take back what `training_state` gave."""
        self.load_state_dict(state["module"])


class UncertaintyWeighting(FixedWeighting):
    """lambda_i * (exp(-s_i) L_i + s_i / 2), s_i learned with the model (its optimiser)."""

    def __init__(self, tasks: Sequence[TaskSpec]) -> None:
        super().__init__(tasks)
        self.log_vars = nn.Parameter(torch.zeros(len(self.names)))

    def trained_with_model(self) -> list[nn.Parameter]:
        return [self.log_vars]

    def weights(self) -> dict[str, float]:
        effective = self.lambdas * torch.exp(-self.log_vars.detach())
        return dict(zip(self.names, effective.tolist(), strict=True))

    def combine(self, losses: dict[str, Tensor], present: set[str]) -> Tensor:
        # A task without labels in the batch must not drive s_i down; its (zero) loss still
        # enters with weight 0, so every head is in every backward pass (DDP needs each rank to
        # use every parameter).
        terms = [
            lam * (torch.exp(-s) * losses[n] + s / 2) if n in present else 0.0 * losses[n]
            for n, lam, s in zip(self.names, self.lambdas, self.log_vars, strict=True)
        ]
        return torch.stack(terms).sum()


class GradNormWeighting(FixedWeighting):
    """Weights w_i (start: lambda_i) balancing gradient norms on the shared block."""

    def __init__(self, tasks: Sequence[TaskSpec], alpha: float, lr: float) -> None:
        super().__init__(tasks)
        self.alpha = alpha
        self.w = nn.Parameter(self.lambdas.clone())
        self.optimizer = torch.optim.Adam([self.w], lr=lr)
        self.initial: dict[str, float] = {}  # L_i at the first batch that had task i's labels

    def training_state(self) -> dict[str, Any]:
        return super().training_state() | {
            "optimizer": self.optimizer.state_dict(),
            "initial": dict(self.initial),
        }

    def load_training_state(self, state: dict[str, Any]) -> None:
        super().load_training_state(state)
        self.optimizer.load_state_dict(state["optimizer"])
        self.initial = dict(state["initial"])

    def weights(self) -> dict[str, float]:
        return dict(zip(self.names, self.w.detach().tolist(), strict=True))

    def combine(self, losses: dict[str, Tensor], present: set[str]) -> Tensor:  # noqa: ARG002
        w = self.w.detach()
        return torch.stack([w[i] * losses[n] for i, n in enumerate(self.names)]).sum()

    def backward(
        self, losses: dict[str, Tensor], present: set[str], shared: Sequence[nn.Parameter]
    ) -> Tensor:
        idx = [i for i, n in enumerate(self.names) if n in present and losses[n].requires_grad]
        norms = torch.stack([self._grad_norm(losses[self.names[i]], shared) for i in idx])
        total = super().backward(losses, present, shared)
        for i in idx:
            self.initial.setdefault(self.names[i], max(losses[self.names[i]].item(), 1e-8))
        if len(idx) > 1:
            rates = torch.tensor(
                [losses[self.names[i]].item() / self.initial[self.names[i]] for i in idx],
                device=self.w.device,
            )
            weighted = self.w[idx] * norms  # G_i = w_i ||dL_i/dW||
            target = (weighted.mean() * (rates / rates.mean()) ** self.alpha).detach()
            self.w.grad = torch.autograd.grad((weighted - target).abs().sum(), self.w)[0]
        return total

    @staticmethod
    def _grad_norm(loss: Tensor, shared: Sequence[nn.Parameter]) -> Tensor:
        grads = torch.autograd.grad(loss, shared, retain_graph=True, allow_unused=True)
        return torch.sqrt(sum((g.pow(2).sum() for g in grads if g is not None), loss.new_zeros(())))

    def step(self) -> None:
        """Move w by its GradNorm gradient, keep it positive and summing to sum(lambda)."""
        if self.w.grad is None:
            return
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        with torch.no_grad():
            self.w.clamp_(min=1e-3)
            self.w.mul_(self.lambdas.sum() / self.w.sum())


def build_weighting(
    name: str, tasks: Sequence[TaskSpec], alpha: float = 1.5, lr: float = 0.025
) -> FixedWeighting:
    """The scheme called `name` (one of WEIGHTINGS)."""
    if name == "uncertainty":
        return UncertaintyWeighting(tasks)
    if name == "gradnorm":
        return GradNormWeighting(tasks, alpha, lr)
    if name == "fixed":
        return FixedWeighting(tasks)
    raise ValueError(f"unknown loss weighting {name!r}; one of {WEIGHTINGS}")
