"""The single-task anchor of ranking: SASRec (Kang & McAuley, ICDM 2018,
https://arxiv.org/abs/1808.09781), trained on the same split and scored on the same events as
the model.

Each user's training interactions, in order, are one sequence; causal self-attention reads it
and every position predicts the next item: against one sampled item the user never touched,
fresh every epoch (binary cross-entropy, the paper's `bce`), or against every trained item at
once (`ce`, a softmax: RecBole's default for SASRec, and often the stronger). A user's score
for a candidate is the dot product of the representation at their last history position with
the candidate's embedding. Every
`check_every` epochs validation NDCG@k (each user's first validation item among
`eval.n_rank_negatives` untouched items) picks the kept weights; training stops `patience`
checks without improvement. The paper's settings for MovieLens-1M are the defaults: 50
dimensions, 2 blocks of 1 head, dropout 0.2, Adam at 1e-3 with beta2 0.98, batches of 128 users,
the last 200 items.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from tqdm import tqdm

from service.artifact import PAD, TaskSpec
from training.config import EvalConfig
from training.data.samples import (
    Events,
    sample_distinct_negatives,
    sample_negatives,
    with_negatives,
)
from training.data.split import TRAIN, VALID, Log
from training.evaluation.evaluate import EvalSets, Predictor, task_metrics
from training.evaluation.retrieval import Scorer
from training.network.encoders import Block

LOSSES = ("bce", "ce")


@dataclass(frozen=True)
class SASRecConfig:
    """SASRec's settings (the paper's for MovieLens-1M)."""

    d_model: int = 50
    length: int = 200  # the last items of a sequence it reads
    n_blocks: int = 2
    n_heads: int = 1
    dropout: float = 0.2
    lr: float = 1e-3
    batch_size: int = 128  # users
    epochs: int = 200
    check_every: int = 5  # epochs between validation checks
    patience: int = 4  # checks without improvement of validation NDCG@k before stopping
    # bce: the paper's, each next item against one sampled item; ce: a softmax over every
    # trained item (RecBole's default for SASRec)
    loss: str = "bce"
    seed: int = 0


class SASRec(nn.Module):
    """Item embeddings (shared by input and output), learned positions, causal blocks."""

    def __init__(self, n_items: int, cfg: SASRecConfig) -> None:
        super().__init__()
        self.items = nn.Embedding(n_items, cfg.d_model, padding_idx=PAD)
        nn.init.xavier_normal_(self.items.weight)  # N(0, 1) rows would saturate every logit
        with torch.no_grad():
            self.items.weight[PAD].zero_()
        self.position = nn.Parameter(torch.randn(cfg.length, cfg.d_model) * 0.02)  # [L, D]
        self.blocks = nn.ModuleList(
            Block(cfg.d_model, cfg.n_heads, cfg.dropout) for _ in range(cfg.n_blocks)
        )
        self.norm = nn.LayerNorm(cfg.d_model)
        self.dropout = nn.Dropout(cfg.dropout)
        self.scale = cfg.d_model**0.5

    def forward(self, sequence: Tensor) -> Tensor:
        """[B, L] item indices (left-padded) -> [B, L, D]: position t has read items <= t."""
        present = sequence != PAD  # [B, L]
        x = self.dropout(self.items(sequence) * self.scale + self.position) * present[..., None]
        length = sequence.shape[1]
        causal = torch.ones(length, length, dtype=torch.bool, device=sequence.device).tril()
        mask = causal[None] & present[:, None, :]  # [B, L, L]: earlier items, never padding
        for block in self.blocks:
            x = block(x, mask) * present[..., None]
        return self.norm(x)


@dataclass(frozen=True)
class Sequences:
    """Per user with training interactions: the items read [U, L] and, at each position, the
    flat index of the event it predicts next (-1: nothing there) and that event's item (PAD)."""

    inputs: np.ndarray
    targets: np.ndarray
    positives: np.ndarray


def training_sequences(log: Log, length: int) -> Sequences:
    """Each user's last `length` training events as targets, each read with the items before
    it (the first event of a sequence reads nothing and is not a target)."""
    train = np.flatnonzero((log.part == TRAIN) & (log.position > 0))
    users, starts = np.unique(log.user[train], return_index=True)
    ends = np.r_[starts[1:], len(train)]
    targets = np.full((len(users), length), -1, dtype=np.int64)
    for row, (start, end) in enumerate(zip(starts, ends, strict=True)):
        mine = train[max(start, end - length) : end]
        targets[row, length - len(mine) :] = mine
    inputs = np.where(targets >= 0, log.item[np.maximum(targets - 1, 0)], PAD)
    positives = np.where(targets >= 0, log.item[np.maximum(targets, 0)], PAD)
    return Sequences(inputs.astype(np.int64), targets, positives.astype(np.int64))


def fit_sasrec(
    log: Log, eval_cfg: EvalConfig, cfg: SASRecConfig, progress: bool = True
) -> tuple[SASRec, list[dict[str, float]]]:
    """SASRec trained on `log`'s training events, kept at its best validation NDCG@k; and the
    validation figures of every check.

    Raises:
        ValueError: an unknown loss.
    """
    if cfg.loss not in LOSSES:
        raise ValueError(f"SASRec's loss must be one of {LOSSES}, not {cfg.loss!r}")
    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    model = SASRec(log.n_items, cfg)
    optimizer = torch.optim.Adam(model.parameters(), lr=cfg.lr, betas=(0.9, 0.98))
    data = training_sequences(log, cfg.length)
    trained_items = np.flatnonzero(log.trained()[0])
    valid = validation_ranking(log, eval_cfg)
    checks: list[dict[str, float]] = []
    best, best_state, since = -1.0, copy.deepcopy(model.state_dict()), 0
    bar = tqdm(range(1, cfg.epochs + 1), desc="SASRec epochs", disable=not progress)
    for epoch in bar:
        loss = _epoch(model, optimizer, log, data, trained_items, cfg, rng)
        if epoch % cfg.check_every and epoch != cfg.epochs:
            continue
        figures = task_metrics(log, valid, [CLICK], predictor(model, log, cfg.length), eval_cfg.k)
        ndcg = figures[f"ndcg@{eval_cfg.k}"]
        checks.append({"epoch": epoch, "train_loss": loss} | figures)
        bar.set_postfix(ndcg=f"{ndcg:.4f}")
        if ndcg > best:
            best, best_state, since = ndcg, copy.deepcopy(model.state_dict()), 0
        else:
            since += 1
            if since >= cfg.patience:
                break
    model.load_state_dict(best_state)
    return model.eval(), checks


CLICK = TaskSpec(name="click", level="item", kind="binary")  # the only task SASRec answers


def _epoch(
    model: SASRec,
    optimizer: torch.optim.Optimizer,
    log: Log,
    data: Sequences,
    trained_items: np.ndarray,
    cfg: SASRecConfig,
    rng: np.random.Generator,
) -> float:
    """One pass over the users in random order; the mean loss per batch. `bce`: each next item
    against one fresh sampled item the user never touched; `ce`: against every trained item at
    once (a softmax over them)."""
    model.train()
    at, positives = data.targets >= 0, data.positives
    if cfg.loss == "bce":
        negatives = np.full(data.targets.shape, PAD, dtype=np.int64)
        negatives[at] = sample_negatives(log, data.targets[at], 1, rng, among=trained_items)[:, 0]
    else:
        slot = np.zeros(log.n_items, dtype=np.int64)  # an item's column among the trained items
        slot[trained_items] = np.arange(len(trained_items))
        pool = torch.from_numpy(trained_items)
    order = rng.permutation(len(data.inputs))
    total, n = 0.0, 0
    for start in range(0, len(order), cfg.batch_size):
        rows = order[start : start + cfg.batch_size]
        h = model(torch.from_numpy(data.inputs[rows]))  # [B, L, D]
        use = torch.from_numpy(at[rows])
        if cfg.loss == "ce":
            logits = h[use] @ model.items(pool).T  # [T, n trained]
            loss = F.cross_entropy(logits, torch.from_numpy(slot[positives[rows]])[use])
        else:
            pos = (h * model.items(torch.from_numpy(positives[rows]))).sum(-1)[use]  # [T]
            neg = (h * model.items(torch.from_numpy(negatives[rows]))).sum(-1)[use]
            loss = F.binary_cross_entropy_with_logits(
                pos, torch.ones_like(pos)
            ) + F.binary_cross_entropy_with_logits(neg, torch.zeros_like(neg))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        total, n = total + loss.item(), n + 1
    return total / max(1, n)


def validation_ranking(log: Log, cfg: EvalConfig) -> EvalSets:
    """Each user's first validation item among `n_rank_negatives` untouched items, as a
    ranking set (the test protocol's, one part earlier), with its click events."""
    rng = np.random.default_rng(cfg.seed + VALID + 100)
    first = log.first_events(VALID)
    ranking = with_negatives(
        log, first, sample_distinct_negatives(log, first, cfg.n_rank_negatives, rng)
    )
    items = with_negatives(log, first, sample_negatives(log, first, cfg.n_click_negatives, rng))
    return EvalSets(items, ranking)


def predictor(model: SASRec, log: Log, length: int, batch_size: int = 512) -> Predictor:
    """Click scores [E, C]: each event's history (its own, or `history_at`'s; a new user's
    view with `cold`) read by SASRec, dotted with each candidate's embedding."""

    def predict(events: Events) -> dict[str, np.ndarray]:
        model.eval()
        at = events.index if events.history_at is None else events.history_at
        history = log.history(at, length, events.cold)
        out = []
        with torch.no_grad():
            for start in range(0, len(at), batch_size):
                h = model(torch.from_numpy(history[start : start + batch_size]))[:, -1]  # [B, D]
                items = model.items(torch.from_numpy(events.candidates[start : start + batch_size]))
                out.append(torch.sigmoid((items * h[:, None, :]).sum(-1)).numpy())
        return {CLICK.name: np.concatenate(out) if out else np.zeros(events.candidates.shape)}

    return predict


def catalogue_scorer(model: SASRec, log: Log, length: int) -> Scorer:
    """Every item's logit [E, n_items] for each event (its history read by SASRec, dotted with
    every item embedding): the ranking its softmax over every item is trained for, in logits so
    that no two items tie where a sigmoid would round both to 1."""

    def score(events: np.ndarray) -> np.ndarray:
        model.eval()
        with torch.no_grad():
            h = model(torch.from_numpy(log.history(events, length)))[:, -1]  # [E, D]
            return (h @ model.items.weight.T).numpy()

    return score
