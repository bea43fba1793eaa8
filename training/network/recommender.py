"""MultiTaskRecommender = embeddings + history encoder + multi-task block + one head per task.

The user side (encoder, block, user heads) runs once per user row [B]; item heads run per candidate
[N] and read their user's representation through `candidate_row`, so a user with 100 candidates is
encoded once (DESIGN.md; the same graph serves ragged batches of several users).

The block reads [behaviour, personal]. Behaviour is the history through the shared encoder plus
its mean (the next item depends on the last few, the profile on everything watched). Personal
differs by level, and this is what makes the tasks help rather than hurt each other, as measured
on MovieLens-100K (reports/ and docs/multitask.md):
- item tasks get a user-id embedding (a rating bias, a taste the history does not show);
- user tasks get the mean of a profile item table that only they train, and read the shared
  item embeddings without writing them (detach); with `network.wide_profile` their heads also
  map that mean linearly to their logits (logistic regression on the watched items, wide & deep).
Profile heads that can read a user-id embedding recall the training users' labels and fail on
users they never saw (holdout gender AUC 0.55); profile losses that write the shared item
embeddings cost click AUC (0.872 against 0.884 without). Encoder weights and experts stay shared.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from service.artifact import PAD, QUERY_OUTPUT, UNK, USER_STATE_OUTPUT, TaskSpec
from training.config import NetworkConfig
from training.data.content import ContentInput
from training.network.content import EMBEDDING_STD, ItemEncoder, ItemSpec, drop_ids
from training.network.encoders import MeanEncoder, build_encoder
from training.network.heads import ItemHead, build_head
from training.network.multitask import ARCHITECTURES, BlockSpec, task_parameters

# Network keys added after checkpoints were written, with the value that reproduces those
# checkpoints' networks (their defaults later changed to True).
BEFORE_KEYS: dict[str, Any] = {"wide_profile": False, "item_dot": False}


@dataclass(frozen=True)
class ModelArgs:
    """Everything needed to rebuild the network (stored in the checkpoint, as nanoGPT does)."""

    n_users: int  # vocabulary sizes including the PAD and UNK rows
    n_items: int
    network: NetworkConfig
    tasks: tuple[TaskSpec, ...]
    features: tuple[ContentInput, ...] = ()  # item features the content encoder reads

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {
            "n_users": self.n_users,
            "n_items": self.n_items,
            "network": asdict(self.network),
            "tasks": [t.model_dump(mode="json") for t in self.tasks],
            "features": [asdict(f) for f in self.features],
        }

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> ModelArgs:
        """Inverse of `to_dict`. A network key that a checkpoint predates reads as what the
        network was before the key existed, not as today's default."""
        return cls(
            raw["n_users"],
            raw["n_items"],
            NetworkConfig(**(BEFORE_KEYS | raw["network"])),
            tuple(TaskSpec.model_validate(t) for t in raw["tasks"]),
            tuple(ContentInput(**f) for f in raw.get("features", ())),
        )


def catalogue_key(task: str) -> str:
    """The key of a task's [B, n_items] catalogue logits in the forward's output."""
    return f"{task}@catalogue"


class MultiTaskRecommender(nn.Module):
    """forward(user_id [B], history [B, L], candidate [N], candidate_row [N]) -> logits per task:
    item tasks [N], user tasks [B, K]."""

    def __init__(self, args: ModelArgs) -> None:
        super().__init__()
        net = args.network
        self.args = args
        self.tasks = args.tasks
        self.history_length = net.history_length
        self.items = ItemEncoder(
            ItemSpec(
                n_items=args.n_items,
                d_model=net.d_embedding,
                features=args.features,
                id_dropout=net.id_dropout,
                token_dropout=net.token_dropout,
                content_dropout=net.content_dropout,
            )
        )
        self.user_embedding = (
            nn.Embedding(args.n_users, net.d_embedding) if net.user_embedding else None
        )
        # Like ItemEncoder.id_row: users without training events read the (trained) UNK row.
        self.user_row: Tensor
        self.register_buffer("user_row", torch.arange(args.n_users))
        self.id_dropout = net.id_dropout
        self.unknown_item_dropout = net.unknown_item_dropout
        # The sequence encoder reads the recent items only; the means read the whole window
        # (the profile is an aggregate of everything watched, the next item mostly a matter of
        # the last few), so L can be long at the cost of an embedding lookup and a mean.
        self.encoder_length = min(net.encoder_length, net.history_length)
        self.encoder = build_encoder(
            net.encoder,
            net.d_embedding,
            self.encoder_length,
            net.n_heads,
            net.n_layers,
            net.dropout,
        )
        spec = BlockSpec(
            d_hidden=net.d_hidden,
            n_experts=net.n_experts,
            n_task_experts=net.n_task_experts,
            n_levels=net.n_levels,
            dropout=net.dropout,
        )
        self.mean = MeanEncoder()
        self.pool_history = net.encoder != "mean" or self.encoder_length < net.history_length
        d_behaviour = net.d_embedding * (2 if self.pool_history else 1)
        self.block = ARCHITECTURES[net.block](d_behaviour + net.d_embedding, len(args.tasks), spec)
        d_wide = net.d_embedding if net.wide_profile else 0
        self.heads = nn.ModuleDict(
            {
                t.name: build_head(
                    t, net.d_hidden, net.d_embedding, net.d_tower, net.dropout, d_wide, net.item_dot
                )
                for t in args.tasks
            }
        )
        # Item vectors written by the user tasks alone, pooled over the history (see docstring).
        self.profile_embedding = (
            nn.Embedding(args.n_items, net.d_embedding, padding_idx=PAD)
            if any(t.level == "user" for t in args.tasks)
            else None
        )
        self.profile_item_dropout = net.profile_item_dropout
        self._init_embeddings()

    def _init_embeddings(self) -> None:
        for embedding in (self.user_embedding, self.profile_embedding):
            if embedding is not None:
                nn.init.normal_(embedding.weight, std=EMBEDDING_STD)
        if self.profile_embedding is not None:
            with torch.no_grad():
                self.profile_embedding.weight[PAD].zero_()

    def set_trained(self, items: Tensor, users: Tensor) -> None:
        """Mark which ids have training events ([n_items], [n_users] bool); the others read the
        unknown row, which id dropout trains, instead of a row nothing ever trained."""
        unk = torch.full_like(self.user_row, UNK)
        self.user_row.copy_(torch.where(users, torch.arange(len(users)), unk))
        rows = torch.arange(len(items))
        kept = items | (rows == PAD)
        self.items.id_row.copy_(torch.where(kept, rows, torch.full_like(rows, UNK)))

    def task_parameters(self, name: str) -> list[nn.Parameter]:
        """The parameters only task `name` reads: its head and its part of the block."""
        index = [t.name for t in self.tasks].index(name)
        return [*self.heads[name].parameters(), *task_parameters(self.block, index)]

    def item_tables(self) -> tuple[Tensor, Tensor | None]:
        """[n_items, d] rows the exported graph looks items up in: the item representation and,
        with user tasks, the profile table read through the same id rows."""
        rows = torch.arange(self.items.spec.n_items)
        profile = None
        if self.profile_embedding is not None:
            profile = self.profile_embedding(self.items.rows(rows))
        return self.items.table(), profile

    def _behaviour(self, emb: Tensor, mask: Tensor) -> Tensor:
        recent = slice(emb.shape[1] - self.encoder_length, None)
        behaviour = self.encoder(emb[:, recent], mask[:, recent])  # [B, d]
        if not self.pool_history:
            return behaviour
        return torch.cat([behaviour, self.mean(emb, mask)], dim=-1)  # [B, 2d]

    def forward(
        self,
        user_id: Tensor,
        history: Tensor,
        candidate: Tensor,
        candidate_row: Tensor,
        user_rows: Tensor | None = None,
        tables: tuple[Tensor, Tensor | None] | None = None,
        catalogue: str | None = None,
        query: bool = False,
    ) -> dict[str, Tensor]:
        """Logits per task. `user_rows` (training only) restricts the user tasks to those rows,
        the few that carry profile labels, so their outputs are [R, K]: the profile pass then
        costs R rows instead of B (about a third of an epoch on MovieLens-100K). `tables`
        (export only): `item_tables()`, precomputed, looked up instead of computed.
        `catalogue` (training only): an item task whose head's dot product also scores every
        item index for every user row, under the key `catalogue_key(task)` ([B, n_items]).
        `query`: also each user row's retrieval query under QUERY_OUTPUT ([B, d]; `retrieval_task`
        must be set): its inner product with an item's row of `item_tables()[0]` is the dot
        part of that item's logit, what the service's index searches by; and under
        USER_STATE_OUTPUT the item tasks' user representations ([B, item tasks, D]), which
        `score_items` ranks retrieved items from."""
        if self.training:
            candidate = drop_ids(candidate, self.unknown_item_dropout)
            user_id = drop_ids(user_id, self.id_dropout)
        mask = history != PAD  # [B, L]
        emb = self._items(history, tables)  # [B, L, d]
        # inference: computed first, and read by the user heads too; training: after their
        # pass, as every earlier model drew its dropout
        behaviour = None if self.training else self._behaviour(emb, mask)  # [B, 2d]
        for_users: list[Tensor] = []  # read only by user heads, so only built when there are some
        profile: Tensor | None = None
        if self.profile_embedding is not None:
            rows = slice(None) if user_rows is None else user_rows
            seen = mask[rows]
            if self.training and self.profile_item_dropout > 0:
                seen = seen & (torch.rand(seen.shape) >= self.profile_item_dropout)
            profile = self.mean(self._profile(history[rows], tables), seen)  # [R, d]
            if behaviour is None or user_rows is not None:  # reads, never trains, emb
                blind = self._behaviour(emb[rows].detach(), seen)
            else:  # in inference the same rows and mask: the encoder runs once, not twice
                blind = behaviour
            for_users = self.block(torch.cat([blind, profile], dim=-1))  # n_tasks x [R, D]
        if behaviour is None:
            behaviour = self._behaviour(emb, mask)
        memo = (
            torch.zeros_like(behaviour[:, : emb.shape[-1]])
            if self.user_embedding is None
            else self.user_embedding(self.user_row[user_id])
        )  # [B, d]
        for_items = self.block(torch.cat([behaviour, memo], dim=-1))  # n_tasks x [B, D]
        item = self._items(candidate, tables)  # [N, d]
        states = [for_items[i] for i, t in enumerate(self.tasks) if t.level == "item"]
        out = self.score_items(states, item, candidate_row)  # item tasks: [N]
        for i, task in enumerate(self.tasks):
            head = self.heads[task.name]
            if task.level == "user":
                out[task.name] = head(for_users[i], profile)  # [B, K]
            if task.name == catalogue:
                assert isinstance(head, ItemHead), "only item tasks score the catalogue"
                out[catalogue_key(task.name)] = head.dot_all(for_items[i], self.items.table())
            if query and task.name == self.retrieval_task:
                assert isinstance(head, ItemHead)
                out[QUERY_OUTPUT] = head.project(for_items[i])  # [B, d]
                out[USER_STATE_OUTPUT] = torch.stack(states, dim=1)  # [B, item tasks, D]
        if query and QUERY_OUTPUT not in out:
            raise ValueError("this network has no retrieval score (network.item_dot is off)")
        return out

    def score_items(
        self, states: list[Tensor], item: Tensor, candidate_row: Tensor
    ) -> dict[str, Tensor]:
        """The item tasks' logits [N] of N items ([N, d] item rows) for the users of
        `candidate_row`, from each item task's user representation ([B, D] each, in task
        order): the part of the forward that recommend mode's rank graph runs on its own."""
        names = [t.name for t in self.tasks if t.level == "item"]
        return {
            name: self.heads[name](state, item, candidate_row)
            for name, state in zip(names, states, strict=True)
        }

    @property
    def retrieval_task(self) -> str | None:
        """The item task whose head's dot product <W h_u, e_i> retrieves from the catalogue:
        the interaction task (click), when its head has the dot product (network.item_dot)."""
        click = next((t.name for t in self.tasks if t.interaction), None)
        return click if click is not None and self.args.network.item_dot else None

    def _items(self, idx: Tensor, tables: tuple[Tensor, Tensor | None] | None) -> Tensor:
        return self.items(idx) if tables is None else F.embedding(idx, tables[0])

    def _profile(self, idx: Tensor, tables: tuple[Tensor, Tensor | None] | None) -> Tensor:
        assert self.profile_embedding is not None
        if tables is None or tables[1] is None:
            return self.profile_embedding(self.items.rows(idx))
        return F.embedding(idx, tables[1])
