"""fit(): plain functions, no trainer class (nanoGPT's train.py, minus the globals).

Each epoch draws fresh negatives, trains with Adam on the joint loss (tqdm shows the live loss),
then measures the validation loss and metrics; the best epoch's weights are kept and training
stops after `patience` epochs without improvement of `optim.monitor`.
"""

from __future__ import annotations

import copy
import functools
import itertools
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel
from tqdm import tqdm

from service.artifact import TaskSpec
from training import resume
from training.calibration import calibrate
from training.config import Config, ConfigError
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
from training.distributed import (
    ALONE,
    Ranks,
    all_objects,
    average_gradients,
    rank_rows,
    sum_over_ranks,
)
from training.evaluate import EvalSets, gathered, model_predictor, task_metrics
from training.head_tuning import lower_is_better, tune_heads
from training.losses import (
    catalogue_softmax_loss,
    interaction_task,
    task_losses,
    weighted_sum,
)
from training.network.recommender import ModelArgs, MultiTaskRecommender, catalogue_key
from training.resume import TrainingState
from training.schedule import epoch_lr, set_lr
from training.weighting import FixedWeighting, build_weighting


@dataclass
class History:
    """One dict of figures per epoch (train_loss*, val_loss*, val metrics) and the best epoch."""

    epochs: list[dict[str, float]] = field(default_factory=list)
    best_epoch: int = 0
    # per tuned task (training.head_tuning): its validation metric, value per tuning epoch, kept
    heads: dict[str, dict[str, Any]] = field(default_factory=dict)
    # per calibrated user task (training.calibration): temperature, users, log loss before/after
    calibration: dict[str, dict[str, Any]] = field(default_factory=dict)


def fit(
    model: MultiTaskRecommender,
    log: Log,
    valid: EvalSets,
    cfg: Config,
    progress: bool = True,
    ranks: Ranks = ALONE,
    state_file: Path | None = None,
    resume_from: TrainingState | None = None,
    config: dict[str, Any] | None = None,
    shards: Shards | None = None,
) -> History:
    """Train `model` in place; on return it holds the weights of the best validation epoch
    (with `optim.head_epochs`, then each other item task's head at its own best: head_tuning;
    with `optim.calibration_users`, then each multiclass user head's temperature: calibration).

    After every epoch (and every `optim.state_every_batches` batches of a streamed one) the
    training state goes to `state_file` (rank 0 writes it, with `config`, the run's config and
    data source); given a state (`training.resume`), training continues from where it was
    written exactly as it would have.

    With several ranks (`training.distributed`), every rank calls this with the same data and
    config; each trains on its slice of every global batch through DistributedDataParallel, and
    all end with the same weights and history. With `shards` (a prepared folder), each epoch
    streams every rank's own slice of the training events instead (training.data.stream).

    Raises:
        ConfigError: a setting several ranks cannot run with, or states within an epoch
            without a prepared folder.
    """
    _check(cfg, ranks, shards)
    torch.manual_seed(cfg.optim.seed + ranks.rank)  # dropout differs by rank, the data does not
    rng = np.random.default_rng(cfg.optim.seed)  # the same order and negatives on every rank
    tasks = model.tasks
    weighting = build_weighting(
        cfg.optim.weighting, tasks, cfg.optim.gradnorm_alpha, cfg.optim.gradnorm_lr
    )
    model.to(ranks.device)
    weighting.to(ranks.device)
    net: nn.Module = DistributedDataParallel(model) if ranks.distributed else model
    optimizer = torch.optim.Adam(
        [
            {"params": list(model.parameters()), "weight_decay": cfg.optim.weight_decay},
            {"params": weighting.trained_with_model(), "weight_decay": 0.0},
        ],
        lr=cfg.optim.lr,
    )
    history, best_state, best = History(), copy.deepcopy(model.state_dict()), None
    first, position = 1, Position()
    if resume_from is not None:
        state = resume_from
        model.load_state_dict(state.model)
        optimizer.load_state_dict(state.optimizer)
        weighting.load_training_state(state.weighting)
        rng.bit_generator.state = state.numpy_rng
        torch.set_rng_state(state.torch_rng[ranks.rank])
        history = History(list(state.epochs), state.best_epoch)
        best, best_state, first = state.best, state.best_model, state.epoch + 1
        position = Position(state.batch, dict(state.partial))
        if state.epoch - history.best_epoch >= cfg.optim.patience:  # it had stopped early
            first = cfg.optim.epochs + 1

    def save_state(epoch: int, at: Position) -> None:
        """The state after `epoch` epochs and `at.batch` batches of the next (a collective)."""
        torch_rng = all_objects(torch.get_rng_state(), ranks)
        if state_file is None or not ranks.main:
            return
        resume.save(
            state_file,
            TrainingState(
                epoch=epoch,
                epochs=history.epochs,
                best_epoch=history.best_epoch,
                best=best,
                best_model=best_state,
                model=model.state_dict(),
                optimizer=optimizer.state_dict(),
                weighting=weighting.training_state(),
                numpy_rng=dict(rng.bit_generator.state),
                torch_rng=torch_rng,
                config=cfg.to_dict() if config is None else config,
                batch=at.batch,
                partial=at.sums,
            ),
        )

    for epoch in range(first, cfg.optim.epochs + 1):
        start = time.perf_counter()
        set_lr(optimizer, epoch_lr(cfg.optim.lr, cfg.optim.lr_schedule, epoch, cfg.optim.epochs))
        figures = train_epoch(
            net,
            model,
            log,
            cfg,
            optimizer,
            weighting,
            rng,
            epoch,
            progress,
            ranks,
            shards,
            position,
            functools.partial(save_state, epoch - 1),
        )
        position = Position()
        figures["lr"] = optimizer.param_groups[0]["lr"]  # the rate this epoch stepped at
        figures |= {f"weight_{name}": w for name, w in weighting.weights().items()}
        figures |= validate(model, log, valid, tasks, cfg, ranks)
        figures["seconds"] = time.perf_counter() - start
        history.epochs.append(figures)
        if progress:
            tqdm.write(_summary(epoch, figures))
        score = figures[f"val_{cfg.optim.monitor}"]
        lower = lower_is_better(cfg.optim.monitor)
        if best is None or (score < best if lower else score > best):
            best, history.best_epoch = score, epoch
            best_state.clear()  # the old copy goes before the new one is made
            best_state = copy.deepcopy(model.state_dict())
        save_state(epoch, Position())
        if epoch - history.best_epoch >= cfg.optim.patience:
            break
    model.load_state_dict(best_state)
    if cfg.optim.head_epochs:
        kept = history.epochs[history.best_epoch - 1]
        history.heads = tune_heads(model, log, valid, cfg, kept, progress, shards)
    if cfg.optim.calibration_users:
        history.calibration = calibrate(model, log, cfg.network.history_length)
    return history


@dataclass(frozen=True)
class Position:
    """Where an epoch is: batches done and the loss sums over them."""

    batch: int = 0
    sums: dict[str, float] = field(default_factory=dict)


def _check(cfg: Config, ranks: Ranks, shards: Shards | None) -> None:
    if cfg.optim.state_every_batches and shards is None:
        raise ConfigError(
            "optim.state_every_batches needs a prepared folder (train --data PREP): an "
            "in-memory epoch draws all its events when it starts"
        )
    if cfg.optim.calibration_users and shards is not None:
        raise ConfigError(
            "optim.calibration_users needs the tables (a data folder, movielens or synthetic): "
            "a prepared folder fixed which users' profile labels training reads"
        )
    if not ranks.distributed:
        return
    if cfg.optim.batch_size % ranks.world:
        raise ConfigError(
            f"optim.batch_size={cfg.optim.batch_size} must be a multiple of the {ranks.world} "
            "ranks (each takes an equal share of every batch)"
        )
    if cfg.optim.weighting == "gradnorm":
        raise ConfigError("optim.weighting=gradnorm runs in one process only; use uncertainty")
    if cfg.optim.head_epochs:
        raise ConfigError("optim.head_epochs (per-task head tuning) runs in one process only")


def _summary(epoch: int, figures: dict[str, float]) -> str:
    shown = ["train_loss", "val_loss", *(k for k in figures if k.endswith("_auc"))]
    line = "  ".join(f"{k} {figures[k]:.4f}" for k in shown)
    return f"epoch {epoch:>2} ({figures['seconds']:.0f} s): {line}"


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
    source, n_batches = _epoch_batches(model, log, cfg, rng, epoch, ranks, shards, position.batch)
    if cfg.optim.max_batches:
        n_batches = min(n_batches, cfg.optim.max_batches)
        source = itertools.islice(source, max(0, n_batches - position.batch))
    sums, every = dict(position.sums), cfg.optim.state_every_batches
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
    return figures | {"samples_per_s": all_events / max(elapsed, 1e-9)}


def _epoch_batches(
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


def save_checkpoint(path: Path, model: MultiTaskRecommender, config: dict[str, Any]) -> None:
    """Weights + model args + the run's config (with its data source), so the checkpoint
    rebuilds itself and can be evaluated or exported again."""
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {"model_args": model.args.to_dict(), "config": config, "state_dict": model.state_dict()}
    torch.save(state, path)


def load_checkpoint(path: Path) -> tuple[MultiTaskRecommender, dict[str, Any]]:
    """The model (eval mode) and the raw checkpoint dict."""
    raw = torch.load(path, map_location="cpu", weights_only=True)
    model = MultiTaskRecommender(ModelArgs.from_dict(raw["model_args"]))
    model.load_state_dict(raw["state_dict"])
    return model.eval(), raw
