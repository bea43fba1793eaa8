"""One tower per task, built from its TaskSpec; every head returns logits.

Item heads score each candidate against its own user's task representation; user heads read the
task representation alone. Probabilities (sigmoid / softmax) are applied only in the exported
graph and in evaluation, so the losses work on logits.
"""

from __future__ import annotations

from typing import cast

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from service.artifact import TaskSpec
from training.network.layers import MLP


class ItemHead(nn.Module):
    """Tower over [h_u, e_i, (W h_u) * e_i] for each candidate: logits [N]. With `dot`, plus
    the sum of the cross term, <W h_u, e_i>: the dot product an MLP only approximates (Rendle
    et al., RecSys 2020, https://arxiv.org/abs/2005.09683)."""

    def __init__(
        self, d_user: int, d_item: int, d_tower: int, dropout: float, dot: bool = False
    ) -> None:
        super().__init__()
        self.project = nn.Linear(d_user, d_item)
        self.tower = MLP(d_user + 2 * d_item, (d_tower,), d_out=1, dropout=dropout)
        self.dot = dot

    def forward(self, user: Tensor, item: Tensor, rows: Tensor | None = None) -> Tensor:
        """[B, D] users and [N, d] items, `rows` [N] each item's user row (None: row i for item
        i) -> [N] logits. The tower's first layer is split into its user part, computed once
        per user row, and its item part: the tower over [h_u, e_i, (W h_u) * e_i] of each
        candidate, without repeating its user's share of the work for every candidate (a
        fifth of the graph's CPU for 100 candidates)."""
        if self.training:  # the form every earlier model trained with (the same figures)
            per_row = user if rows is None else user.index_select(0, rows)
            cross = self.project(per_row) * item  # [N, d]
            logits = self.tower(torch.cat([per_row, item, cross], dim=-1)).squeeze(-1)
            return logits + cross.sum(dim=-1) if self.dot else logits
        first = cast(nn.Linear, self.tower.net[0])  # Linear(D + 2d -> d_tower)
        rest = self.tower.net[1:]  # ReLU, dropout, the output layer
        d_user = user.shape[-1]
        projected = self.project(user)  # [B, d]
        per_user = F.linear(user, first.weight[:, :d_user])  # [B, d_tower]
        if rows is not None:
            projected, per_user = projected.index_select(0, rows), per_user.index_select(0, rows)
        cross = projected * item  # [N, d]
        per_item = F.linear(torch.cat([item, cross], dim=-1), first.weight[:, d_user:], first.bias)
        logits = rest(per_user + per_item).squeeze(-1)  # [N]
        return logits + cross.sum(dim=-1) if self.dot else logits

    def dot_all(self, user: Tensor, items: Tensor) -> Tensor:
        """[B, D] users against [M, d] items -> [B, M]: the dot-product part of the logit of
        every (user, item) pair, without running the tower on B x M rows."""
        return self.project(user) @ items.T


class UserHead(nn.Module):
    """Tower over the user's task representation: logits [B, K]. With `d_wide`, plus a linear
    map of the pooled profile vector (the mean of the history's profile-item rows): logistic
    regression on the bag of watched items, factorised through the profile table, beside the
    deep path (wide & deep). The logits are divided by `temperature`, 1 unless the head was
    calibrated after training (training.fit.calibration)."""

    temperature: Tensor

    def __init__(
        self, d_user: int, d_tower: int, n_classes: int, dropout: float, d_wide: int = 0
    ) -> None:
        super().__init__()
        self.tower = MLP(d_user, (d_tower,), d_out=n_classes, dropout=dropout)
        self.wide = nn.Linear(d_wide, n_classes, bias=False) if d_wide else None
        self.register_buffer("temperature", torch.ones(()))

    def forward(self, user: Tensor, profile: Tensor | None = None) -> Tensor:
        """[B, D] (and [B, d] pooled profile rows) -> [B, K]."""
        logits = self.tower(user)
        if self.wide is not None:
            assert profile is not None, "a wide head reads the pooled profile vector"
            logits = logits + self.wide(profile)
        return logits / self.temperature

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):  # type: ignore[no-untyped-def]
        # checkpoints from before calibration have no temperature: theirs is 1
        state_dict.setdefault(prefix + "temperature", torch.ones(()))
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)


def build_head(
    task: TaskSpec,
    d_user: int,
    d_item: int,
    d_tower: int,
    dropout: float,
    d_wide: int = 0,
    dot: bool = False,
) -> nn.Module:
    """The head for one task: ItemHead for item tasks, UserHead (wide over `d_wide` profile
    dimensions when > 0) for user tasks."""
    if task.level == "item":
        return ItemHead(d_user, d_item, d_tower, dropout, dot)
    if not task.classes:
        raise ValueError(f"task {task.name!r} has no classes; build the vocabularies first")
    return UserHead(d_user, d_tower, len(task.classes), dropout, d_wide)


def to_output(task: TaskSpec, logits: Tensor) -> Tensor:
    """The task's served output from its logits: a probability (sigmoid / softmax over K) or,
    for regression, the value itself. Used by the exported graph and by evaluation alike."""
    if task.kind in ("binary", "multilabel"):
        return torch.sigmoid(logits)
    if task.kind == "multiclass":
        return torch.softmax(logits, dim=-1)
    return logits
