"""fit(): plain functions, no trainer class (nanoGPT's train.py, minus the globals).

Each epoch (training.fit.epoch) draws fresh negatives, trains with Adam on the joint loss at the
epoch's learning rate (training.fit.schedule; tqdm shows the live loss), then measures the
validation loss and metrics; the best epoch's weights are kept and training stops after
`patience` epochs without improvement of `optim.monitor`. A refit (training.fit.refit) replays what
such a run chose instead: its kept number of epochs at the same learning rates, its head-tuning
epochs and its temperatures, with no validation. Also the checkpoint's reader and writer.
"""

from __future__ import annotations

import copy
import functools
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from tqdm import tqdm

from service.artifact import FitSpec
from training.config import Config, ConfigError
from training.data.prepared import Shards
from training.data.split import Log
from training.distributed import ALONE, Ranks, all_objects
from training.evaluation.evaluate import EvalSets
from training.fit import resume
from training.fit.calibration import calibrate, set_temperatures
from training.fit.epoch import Position, train_epoch, validate
from training.fit.head_tuning import lower_is_better, tune_heads
from training.fit.resume import TrainingState
from training.fit.schedule import epoch_lr, set_lr
from training.fit.weighting import build_weighting
from training.network.recommender import ModelArgs, MultiTaskRecommender

CHECKPOINT = "checkpoint.pt"  # reports/<name>/<version>/: the published weights
HELDOUT_CHECKPOINT = "heldout.pt"  # beside a refit's: the evaluated run's weights


@dataclass
class History:
    """One dict of figures per epoch (train_loss*, val_loss*, val metrics) and the best epoch."""

    epochs: list[dict[str, float]] = field(default_factory=list)
    best_epoch: int = 0
    # per tuned task (training.fit.head_tuning): its validation metric, value per tuning epoch, kept
    heads: dict[str, dict[str, Any]] = field(default_factory=dict)
    # per calibrated user task (training.fit.calibration): temperature, users, log loss before/after
    calibration: dict[str, dict[str, Any]] = field(default_factory=dict)


@dataclass(frozen=True)
class Replay:
    """What a refit repeats of an evaluated run, which validation chose (training.fit.refit)."""

    epochs: int  # the kept (best) epoch: the refit trains this many, at the same rates
    head_epochs: dict[str, int] = field(default_factory=dict)  # per tuned task, epochs kept
    temperatures: dict[str, float] = field(default_factory=dict)  # per calibrated user task

    @classmethod
    def of(cls, history: History) -> Replay:
        """What the run of `history` chose."""
        return cls(
            epochs=history.best_epoch,
            head_epochs={task: int(h["kept"]) for task, h in history.heads.items()},
            temperatures={task: float(c["temperature"]) for task, c in history.calibration.items()},
        )


def fit(
    model: MultiTaskRecommender,
    log: Log,
    valid: EvalSets | None,
    cfg: Config,
    progress: bool = True,
    ranks: Ranks = ALONE,
    state_file: Path | None = None,
    resume_from: TrainingState | None = None,
    config: dict[str, Any] | None = None,
    shards: Shards | None = None,
    replay: Replay | None = None,
) -> History:
    """Train `model` in place; on return it holds the weights of the best validation epoch
    (with `optim.head_epochs`, then each other item task's head at its own best: head_tuning;
    with `optim.calibration_users`, then each multiclass user head's temperature: calibration).

    After every epoch (and every `optim.state_every_batches` batches of a streamed one) the
    training state goes to `state_file` (rank 0 writes it, with `config`, the run's config and
    data source); given a state (`training.fit.resume`), training continues from where it was
    written exactly as it would have.

    With several ranks (`training.distributed`), every rank calls this with the same data and
    config; each trains on its slice of every global batch through DistributedDataParallel, and
    all end with the same weights and history. With `shards` (a prepared folder), each epoch
    streams every rank's own slice of the training events instead (training.data.stream).

    With `replay` (and no `valid`), nothing is validated: the model trains `replay.epochs`
    epochs at the rates the schedule gives them within `optim.epochs`, keeps the last, tunes
    each head for its kept epochs and takes the replayed temperatures.

    Raises:
        ConfigError: a setting several ranks cannot run with, or states within an epoch
            without a prepared folder.
    """
    _check(cfg, ranks, shards)
    assert (valid is None) == (replay is not None), "validation or a replay, not both"
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

    for epoch in range(first, (replay.epochs if replay else cfg.optim.epochs) + 1):
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
        if valid is not None:
            figures |= validate(model, log, valid, tasks, cfg, ranks)
        figures["seconds"] = time.perf_counter() - start
        history.epochs.append(figures)
        if progress:
            tqdm.write(_summary(epoch, figures))
        if valid is None:  # a replay keeps its last epoch
            history.best_epoch = epoch
            continue
        score = figures[f"val_{cfg.optim.monitor}"]
        lower = lower_is_better(cfg.optim.monitor)
        if best is None or (score < best if lower else score > best):
            best, history.best_epoch = score, epoch
            best_state.clear()  # the old copy goes before the new one is made
            best_state = copy.deepcopy(model.state_dict())
        save_state(epoch, Position())
        if epoch - history.best_epoch >= cfg.optim.patience:
            break
    if replay is not None:
        history.heads = tune_heads(model, log, None, cfg, {}, progress, shards, replay.head_epochs)
        history.calibration = set_temperatures(model, replay.temperatures)
        return history
    model.load_state_dict(best_state)
    if cfg.optim.head_epochs:
        kept = history.epochs[history.best_epoch - 1]
        history.heads = tune_heads(model, log, valid, cfg, kept, progress, shards)
    if cfg.optim.calibration_users:
        history.calibration = calibrate(model, log, cfg.network.history_length)
    return history


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
    shown: list[str] = [k for k in ("train_loss", "val_loss") if k in figures]
    shown += [k for k in figures if k.endswith("_auc")]
    line = "  ".join(f"{k} {figures[k]:.4f}" for k in shown)
    return f"epoch {epoch:>2} ({figures['seconds']:.0f} s): {line}"


def save_checkpoint(
    path: Path,
    model: MultiTaskRecommender,
    config: dict[str, Any],
    fit: FitSpec,
    estimate: dict[str, dict[str, float]],
) -> None:
    """Weights + model args + the run's config (with its data source), so the checkpoint
    rebuilds itself and can be evaluated or exported again; what the weights learned from (a
    refit's says so: its test split was training data) and the evaluated run's figures (which
    a refit's export publishes, since its own test figures would be measured on training data)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {
        "model_args": model.args.to_dict(),
        "config": config,
        "state_dict": model.state_dict(),
        "fit": fit.model_dump(),
        "estimate": estimate,
    }
    torch.save(state, path)


def load_checkpoint(path: Path) -> tuple[MultiTaskRecommender, dict[str, Any]]:
    """The model (eval mode) and the raw checkpoint dict."""
    raw = torch.load(path, map_location="cpu", weights_only=True)
    model = MultiTaskRecommender(ModelArgs.from_dict(raw["model_args"]))
    model.load_state_dict(raw["state_dict"])
    return model.eval(), raw
