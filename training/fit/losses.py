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
from training.data.vocab import interaction_task


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


def entire_space_loss(
    click_logits: Tensor, like_logits: Tensor, click: Tensor, like: Tensor, like_known: Tensor
) -> Tensor:
    """ESMM (Ma et al., SIGIR 2018, https://arxiv.org/abs/1804.07931): BCE of
    p(click and like) = p(click) * p(like | click) over every candidate, so the like head learns
    from the negatives too (a never-clicked item is not liked) instead of from clicks alone.
    Rows count where the joint label is known: every negative, real items with a like label."""
    log_joint = F.logsigmoid(click_logits) + F.logsigmoid(like_logits)  # log p(click, like)
    log_not = torch.log1p(-torch.exp(log_joint).clamp(max=1 - 1e-6))
    target = click.float() * like.float()
    per_row = -(target * log_joint + (1 - target) * log_not)
    weights = ((click == 0) | like_known).to(per_row.dtype)
    return (per_row * weights).sum() / weights.sum().clamp(min=1.0)


def sampled_softmax_loss(logits: Tensor, n_events: int) -> Tensor:
    """Mean cross-entropy of each event's real item (candidate 0) against its own sampled
    negatives: a softmax over the event's C candidates (Jean et al., ACL 2015; the listwise
    objective of sequential recommenders such as SASRec's successors) instead of C independent
    binary decisions. `logits`: [N = n_events * C], grouped by event as the batches lay them."""
    grouped = logits.view(n_events, -1)  # [B, C]
    return F.cross_entropy(grouped, torch.zeros(n_events, dtype=torch.long, device=logits.device))


def catalogue_softmax_loss(logits: Tensor, candidate: Tensor, allowed: Tensor) -> Tensor:
    """Mean cross-entropy of each event's real item against the whole catalogue (the full
    softmax of SASRec's cross-entropy variant: Klenitskiy & Vasilev, RecSys 2023,
    https://arxiv.org/abs/2309.07602), which a handful of sampled negatives only approximates.
    `logits`: [B, n_items] per event; `candidate`: [N = B * C], each event's real item first;
    `allowed`: [n_items] bool, the items that may be ranked (those with training interactions:
    an item that is never a positive would only learn to rank last, new items included). An
    event whose real item is not allowed (a validation event's untrained item) adds nothing."""
    real = candidate.view(logits.shape[0], -1)[:, 0]  # [B]
    masked = logits.masked_fill(~allowed, torch.finfo(logits.dtype).min)  # [B, n_items]
    known = allowed[real]  # [B]
    per_event = F.cross_entropy(masked, real, reduction="none")  # [B]
    return per_event.where(known, 0.0).sum() / known.sum().clamp(min=1)


def task_losses(
    tasks: Sequence[TaskSpec],
    logits: dict[str, Tensor],
    labels: dict[str, Tensor],
    masks: dict[str, Tensor],
    esmm: bool = False,
    softmax: float = 0.0,
) -> dict[str, Tensor]:
    """Each task's unweighted loss L_i (how they are combined: `training.fit.weighting`). With
    `esmm`, binary item tasks with a label column are learned on the entire candidate space,
    chained to the interaction task. With `softmax` > 0 the interaction task's loss adds that
    weight times the sampled-softmax loss over each event's candidates."""
    losses = {t.name: task_loss(t, logits[t.name], labels[t.name], masks[t.name]) for t in tasks}
    if softmax:
        click = interaction_task(tasks)
        n_events = int(labels[click].sum().item())  # one real item (label 1) per event
        losses[click] = losses[click] + softmax * sampled_softmax_loss(logits[click], n_events)
    if esmm:
        click = interaction_task(tasks)
        for t in tasks:
            if t.level == "item" and t.kind == "binary" and not t.interaction:
                losses[t.name] = entire_space_loss(
                    logits[click], logits[t.name], labels[click], labels[t.name], masks[t.name]
                )
    return losses


def weighted_sum(tasks: Sequence[TaskSpec], per_task: dict[str, Tensor]) -> Tensor:
    """The joint loss with the tasks' fixed weights: sum_i lambda_i * L_i."""
    return torch.stack([t.weight * per_task[t.name] for t in tasks]).sum()
