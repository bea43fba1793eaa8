"""Per-task model selection: each item task's head kept at its own best validation epoch.

Early stopping follows one monitor (validation click AUC by default), but the tasks peak at
different epochs: like AUC on MovieLens-100K peaks several epochs before click's. With
`optim.head_epochs` > 0, after the joint fit every other item task that has a validation metric
is tuned alone on the kept body: every parameter another task reads stays frozen, the task's own
parameters (its head, its MMoE gate or PLE top-level gate and experts) train on its loss alone
for up to `head_epochs` epochs under the same early stopping, and they are kept at their best
validation epoch. Epoch 0 is the head as the joint fit left it, so tuning never makes a task
worse on validation, and nothing the other tasks read moves, so their outputs do not change.

User tasks have no validation labels (their holdout users are the test set) and are not tuned.
A refit (training.fit.refit) has no validation either: it tunes each head for the epochs the
evaluated run kept (`fixed`) and keeps the last.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from service.artifact import TaskSpec
from training.config import Config
from training.data.prepared import Shards
from training.data.split import Log
from training.evaluation.evaluate import EvalSets
from training.fit.epoch import train_epoch, validate
from training.fit.weighting import FixedWeighting
from training.network.recommender import MultiTaskRecommender


def tunable(tasks: Sequence[TaskSpec], monitor: str) -> list[tuple[TaskSpec, str]]:
    """(task, validation metric) of every item task that has one, other than the monitor's."""
    out = []
    for t in tasks:
        if t.level != "item":
            continue
        metric = f"{t.name}_rmse" if t.kind == "regression" else f"{t.name}_auc"
        if metric != monitor:
            out.append((t, metric))
    return out


def lower_is_better(metric: str) -> bool:
    """Whether a smaller value of a validation metric is the better one."""
    return metric.endswith(("loss", "rmse"))


def tune_heads(
    model: MultiTaskRecommender,
    log: Log,
    valid: EvalSets | None,
    cfg: Config,
    start: dict[str, float],
    progress: bool = False,
    shards: Shards | None = None,
    fixed: dict[str, int] | None = None,
) -> dict[str, dict[str, Any]]:
    """Tune each tunable task's own parameters alone (in place); per task, the validation
    metric, its value after each tuning epoch (index 0: `start`, the kept joint epoch's
    figures) and the epoch kept. With `fixed` (and no `valid`): each task of it trains its
    number of epochs, unvalidated (values empty), and keeps the last."""
    rng = np.random.default_rng([cfg.optim.seed, 3])
    out = {}
    for task, metric in tunable(model.tasks, cfg.optim.monitor):
        if fixed is not None and task.name not in fixed:
            continue
        own = model.task_parameters(task.name)
        mine = {id(p) for p in own}
        trainable = {id(p): p.requires_grad for p in model.parameters()}
        for p in model.parameters():
            p.requires_grad_(id(p) in mine)
        alone = FixedWeighting(
            [t.model_copy(update={"weight": float(t is task)}) for t in model.tasks]
        )
        optimizer = torch.optim.Adam(own, lr=cfg.optim.lr, weight_decay=cfg.optim.weight_decay)
        values, kept = ([] if valid is None else [start[f"val_{metric}"]]), 0
        best = [p.detach().clone() for p in own]
        epochs = cfg.optim.head_epochs if fixed is None else fixed[task.name]
        for epoch in range(1, epochs + 1):
            train_epoch(
                model, model, log, cfg, optimizer, alone, rng, epoch, progress, shards=shards
            )
            if valid is None:
                kept, best = epoch, [p.detach().clone() for p in own]
                continue
            values.append(validate(model, log, valid, model.tasks, cfg)[f"val_{metric}"])
            if _better(metric, values[-1], values[kept]):
                kept, best = epoch, [p.detach().clone() for p in own]
            elif epoch - kept >= cfg.optim.patience:
                break
        with torch.no_grad():
            for p, value in zip(own, best, strict=True):
                p.copy_(value)
        for p in model.parameters():
            p.requires_grad_(trainable[id(p)])
        out[task.name] = {"metric": metric, "values": values, "kept": kept}
    model.eval()
    return out


def _better(metric: str, value: float, best: float) -> bool:
    return value < best if lower_is_better(metric) else value > best
