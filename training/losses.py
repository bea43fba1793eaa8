"""The joint loss L = sum_i lambda_i * L_i, each L_i averaged over the rows that have its label.

A task without any label in a batch adds exactly 0 (not NaN) and gets no gradient; rows without a
label never contribute. Losses take logits (BCEWithLogits / cross-entropy are the numerically
stable forms; torch-rechub's BCELoss-on-sigmoid is the anti-example).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from service.artifact import TaskSpec


def task_loss(task: TaskSpec, logits: Tensor, labels: Tensor, mask: Tensor) -> Tensor:
    """Mean loss of one task over the rows where `mask` is True (0 if there are none)."""
    if task.kind == "binary":
        per_row = F.binary_cross_entropy_with_logits(logits, labels.float(), reduction="none")
    elif task.kind == "regression":
        per_row = F.mse_loss(logits, labels.float(), reduction="none")
    elif task.kind == "multiclass":
        per_row = F.cross_entropy(logits, labels.clamp(min=0), reduction="none")  # [B]
    else:  # multilabel: mean over the K labels of each row
        per_row = F.binary_cross_entropy_with_logits(logits, labels.float(), reduction="none").mean(
            dim=-1
        )  # [B]
    weights = mask.to(per_row.dtype)
    return (per_row * weights).sum() / weights.sum().clamp(min=1.0)


def joint_loss(
    tasks: Sequence[TaskSpec],
    logits: dict[str, Tensor],
    labels: dict[str, Tensor],
    masks: dict[str, Tensor],
) -> tuple[Tensor, dict[str, Tensor]]:
    """Weighted sum of the task losses, and each task's unweighted loss.

    Returns:
        (total, {task: L_i}).
    """
    per_task = {t.name: task_loss(t, logits[t.name], labels[t.name], masks[t.name]) for t in tasks}
    total = torch.stack([t.weight * per_task[t.name] for t in tasks]).sum()
    return total, per_task
