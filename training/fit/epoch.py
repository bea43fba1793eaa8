"""One epoch of training and one pass of validation (fit() in training.fit.train calls them, and
so does head tuning): this rank's batches with fresh negatives, each task's loss on a batch,
the validation loss and metrics gathered over the ranks."""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import Tensor, nn
from tqdm import tqdm

from service.artifact import TaskSpec
from training.config import Config
from training.data.prepared import Shards
from training.data.samples import (
    Batch,
    batches,
    pick_profile_events,
    sample_negatives,
    with_negatives,
)
from training.data.split import TRAIN, Log
from training.data.stream import SampleStream, StreamArgs, loader
from training.data.vocab import interaction_task
from training.distributed import ALONE, Ranks, average_gradients, rank_rows, sum_over_ranks
from training.evaluation.evaluate import EvalSets, gathered, model_predictor, task_metrics
from training.fit.gradients import CosineProbe
from training.fit.losses import catalogue_softmax_loss, task_losses, weighted_sum
from training.fit.weighting import FixedWeighting
from training.network.recommender import MultiTaskRecommender, catalogue_key


@dataclass(frozen=True)
class Position:
    """Where an epoch is: batches done and the loss sums over them."""

    batch: int = 0
    sums: dict[str, float] = field(default_factory=dict)


def train_epoch(
    net: nn.Module,
    model: MultiTaskRecommender,
    log: Log,
    cfg: Config,
    optimizer: torch.optim.Optimizer,
    weighting: FixedWeighting,
    rng: np.random.Generator,
    epoch: int,
    progress: bool,
    ranks: Ranks = ALONE,
    shards: Shards | None = None,
    position: Position = Position(),
    on_batch: Callable[[Position], None] | None = None,
) -> dict[str, float]:
    """One pass over the training events with fresh negatives; mean losses per task. `net` is
    `model`, or `model` wrapped in DistributedDataParallel (this rank's share of each batch).
    A streamed epoch starts at `position` (a resumed run) and calls `on_batch` every
    `optim.state_every_batches` batches with the position reached."""
    model.train()
    tasks, shared = model.tasks, list(model.block.parameters())
    source, n_batches = epoch_batches(model, log, cfg, rng, epoch, ranks, shards, position.batch)
    if cfg.optim.max_batches:
        n_batches = min(n_batches, cfg.optim.max_batches)
        source = itertools.islice(source, max(0, n_batches - position.batch))
    sums, every = dict(position.sums), cfg.optim.state_every_batches
    cosines = CosineProbe(
        model, cfg.optim.grad_cosine_batches if ranks.world == 1 else 0, n_batches
    )
    n_events, start = 0, time.perf_counter()
    bar = tqdm(
        source,
        initial=position.batch,
        total=n_batches,
        desc=f"epoch {epoch}",
        disable=not progress,
        leave=False,
    )
    for step, batch in enumerate(bar, start=position.batch + 1):
        batch = batch.to(ranks.device)
        n_events += len(batch.inputs["user_id"])
        rows, labels, masks = _profile_rows(batch, tasks)
        per_task = batch_losses(net, model, batch.inputs, labels, masks, cfg, rows)
        present = {name for name, mask in masks.items() if mask.any()}
        if cosines.wants(step):
            cosines.probe({name: per_task[name] for name in per_task if name in present})
        optimizer.zero_grad(set_to_none=True)
        total = weighting.backward(per_task, present, shared)
        average_gradients(weighting.trained_with_model(), ranks)
        optimizer.step()
        weighting.step()
        for name, value in {"loss": total, **{f"loss_{k}": v for k, v in per_task.items()}}.items():
            sums[name] = sums.get(name, 0.0) + value.item()
        bar.set_postfix(loss=f"{sums['loss'] / step:.4f}")
        if on_batch is not None and every and step % every == 0 and step < n_batches:
            on_batch(Position(step, dict(sums)))
    elapsed = time.perf_counter() - start
    *totals, all_events = sum_over_ranks(
        [*sums.values(), n_events], ranks
    )  # every rank ran n_batches
    n_all = max(1, n_batches * ranks.world)
    figures = {f"train_{k}": v / n_all for k, v in zip(sums, totals, strict=True)}
    return figures | {"samples_per_s": all_events / max(elapsed, 1e-9)} | cosines.figures()


def epoch_batches(
    model: MultiTaskRecommender,
    log: Log,
    cfg: Config,
    rng: np.random.Generator,
    epoch: int,
    ranks: Ranks,
    shards: Shards | None,
    start: int,
) -> tuple[Iterable[Batch], int]:
    """This rank's batches of one epoch and how many: its share of every global batch of the
    in-memory events, or its slice of a prepared folder's streamed events."""
    batch_size = cfg.optim.batch_size // ranks.world
    # Negatives only among items with training interactions: an item without any (its id reads
    # the unknown row) would otherwise only ever be a negative, and the model would learn that
    # content-only items, the new ones included, are never clicked. Content-only items are seen
    # through id dropout instead, as positives and negatives alike.
    trained_items = np.flatnonzero(log.trained()[0])
    if shards is not None:
        args = StreamArgs(
            tasks=model.tasks,
            batch_size=batch_size,
            n_negatives=cfg.optim.n_negatives,
            user_task_events=cfg.optim.user_task_events,
            history_length=cfg.network.history_length,
            shuffle_buffer=cfg.optim.shuffle_buffer,
            seed=cfg.optim.seed,
            pool=trained_items,
            n_items=log.n_items,
        )
        stream = SampleStream(
            shards, args, epoch, ranks.rank, ranks.world, cfg.optim.loader_workers, start
        )
        return loader(stream), len(stream)
    idx = log.events(TRAIN)
    labelled = (
        pick_profile_events(log, idx, cfg.optim.user_task_events, cfg.network.history_length, rng)
        if cfg.optim.user_task_events
        else None
    )
    negatives = sample_negatives(log, idx, cfg.optim.n_negatives, rng, among=trained_items)
    events = with_negatives(log, idx, negatives, labelled)
    mine = rank_rows(rng.permutation(len(idx)), ranks)  # one process: the whole shuffled order
    source = batches(
        log, events.take(mine), model.tasks, cfg.network.history_length, batch_size, True
    )
    return source, -(-len(mine) // batch_size)


def batch_losses(
    net: nn.Module,
    model: MultiTaskRecommender,
    inputs: dict[str, Tensor],
    labels: dict[str, Tensor],
    masks: dict[str, Tensor],
    cfg: Config,
    rows: Tensor | None = None,
) -> dict[str, Tensor]:
    """Each task's unweighted loss on one batch, run through `net` (`model`, or `model` in
    DistributedDataParallel); with `optim.catalogue_softmax`, the interaction task's loss adds
    the full-catalogue softmax over the items with training interactions."""
    o = cfg.optim
    click = interaction_task(model.tasks) if o.catalogue_softmax else None
    logits = net(**inputs, user_rows=rows, catalogue=click)
    per_task = task_losses(model.tasks, logits, labels, masks, o.esmm, o.sampled_softmax)
    if click is not None:
        term = catalogue_softmax_loss(
            logits[catalogue_key(click)], inputs["candidate"], model.items.trained_items()
        )
        per_task[click] = per_task[click] + o.catalogue_softmax * term
    return per_task


def _profile_rows(
    batch: Batch, tasks: Sequence[TaskSpec]
) -> tuple[Tensor | None, dict[str, Tensor], dict[str, Tensor]]:
    """The rows that carry a user-task label, with the user tasks' labels and masks cut to them
    (at least one row, so no graph ever runs on an empty batch; an unlabelled row adds 0)."""
    user_tasks = [t.name for t in tasks if t.level == "user"]
    if not user_tasks:
        return None, batch.labels, batch.masks
    labelled = torch.stack([batch.masks[name] for name in user_tasks]).any(dim=0)  # [B]
    rows = labelled.nonzero().squeeze(1) if labelled.any() else torch.zeros(1, dtype=torch.long)
    labels = batch.labels | {name: batch.labels[name][rows] for name in user_tasks}
    masks = batch.masks | {name: batch.masks[name][rows] for name in user_tasks}
    return rows, labels, masks


def validate(
    model: MultiTaskRecommender,
    log: Log,
    valid: EvalSets,
    tasks: Sequence[TaskSpec],
    cfg: Config,
    ranks: Ranks = ALONE,
) -> dict[str, float]:
    """Validation joint loss (profile labels of holdout users stay hidden) and item metrics;
    with several ranks, each takes a share of the events and the sums and predictions are
    gathered, so every rank gets the figures one process would."""
    model.eval()
    sums: dict[str, float] = {}
    n = 0
    mine = valid.items.take(np.arange(len(valid.items.index))[ranks.rank :: ranks.world])
    with torch.no_grad():
        for batch in batches(log, mine, tasks, cfg.network.history_length, 1024, hide_holdout=True):
            batch = batch.to(ranks.device)
            per_task = batch_losses(model, model, batch.inputs, batch.labels, batch.masks, cfg)
            total = weighted_sum(tasks, per_task)
            rows = len(batch.inputs["user_id"])
            for name, value in {
                "loss": total,
                **{f"loss_{k}": v for k, v in per_task.items()},
            }.items():
                sums[name] = sums.get(name, 0.0) + value.item() * rows
            n += rows
    *totals, n_all = sum_over_ranks([*(sums.get(k, 0.0) for k in _loss_names(tasks)), n], ranks)
    figures = {
        f"val_{k}": v / max(1.0, n_all) for k, v in zip(_loss_names(tasks), totals, strict=True)
    }
    predict = gathered(model_predictor(model, log, tasks, cfg.network.history_length), ranks)
    metrics = task_metrics(log, valid, tasks, predict, cfg.eval.k)
    return figures | {f"val_{k}": v for k, v in metrics.items()}


def _loss_names(tasks: Sequence[TaskSpec]) -> list[str]:
    return ["loss", *(f"loss_{t.name}" for t in tasks)]
