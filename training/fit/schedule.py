"""The learning rate of each epoch (`optim.lr_schedule`).

A function of the epoch alone, so a resumed run (training.fit.resume) sets the same rate as the run
it continues without keeping a scheduler's state.
"""

from __future__ import annotations

import math

import torch


def epoch_lr(lr: float, schedule: str, epoch: int, epochs: int) -> float:
    """The rate of `epoch` (1-based) of `epochs`: `lr` throughout ("constant"), or from `lr` at
    the first epoch down half a cosine towards 0 at the end ("cosine"; Loshchilov & Hutter,
    SGDR, ICLR 2017, https://arxiv.org/abs/1608.03983, without restarts)."""
    if schedule == "constant":
        return lr
    if schedule == "cosine":
        return lr * 0.5 * (1.0 + math.cos(math.pi * (epoch - 1) / epochs))
    raise ValueError(f"unknown learning-rate schedule {schedule!r}")


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    """Every parameter group of `optimizer` steps at `lr` from now on."""
    for group in optimizer.param_groups:
        group["lr"] = lr
