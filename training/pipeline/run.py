"""A training run: fit and evaluate on the split, refit on all of the data (training.fit.refit),
export the published weights with the evaluated run's figures, keep both checkpoints, and write
the report."""

from __future__ import annotations

import resource
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path

import torch

from service.artifact import UNK, FitSpec
from training import distributed
from training.config import Config
from training.data.samples import Events, make_batch
from training.data.split import Log
from training.evaluation.protocol import evaluate_baselines, evaluate_model
from training.fit import resume
from training.fit.refit import learned_from, refit
from training.fit.report import write_report
from training.fit.train import CHECKPOINT, HELDOUT_CHECKPOINT, History, fit, save_checkpoint
from training.network.recommender import ModelArgs, MultiTaskRecommender
from training.pipeline.prepare import Prepared, prepare, run_name
from training.publish.export import export_artifact

N_PARITY_EVENTS = 1000


@dataclass(frozen=True)
class RunResult:
    """What a training run produced."""

    artifact: Path
    report: dict[str, Path]
    metrics: dict[str, float]  # the evaluated run's (the estimate, with a refit)
    baselines: dict[str, float]
    history: History  # the evaluated run's
    fit: FitSpec  # what the published weights learned from


def new_model(cfg: Config, data: Prepared, log: Log | None = None) -> MultiTaskRecommender:
    """A freshly initialised network for this data (seeded), its ids trained as in `log`
    (default: the evaluated run's, `data.log`)."""
    torch.manual_seed(cfg.optim.seed)
    model = MultiTaskRecommender(
        ModelArgs(
            n_users=data.log.n_users,
            n_items=data.log.n_items,
            network=cfg.network,
            tasks=data.tasks,
            features=data.content.inputs,
        )
    )
    model.items.set_content({k: torch.from_numpy(v) for k, v in data.content.arrays.items()})
    items, users = (data.log if log is None else log).trained()
    model.set_trained(torch.from_numpy(items), torch.from_numpy(users))
    return model


@dataclass(frozen=True)
class Fitted:
    """One evaluated fit of a study (no refit, no export, no report)."""

    data: Prepared
    model: MultiTaskRecommender
    history: History
    seconds: float  # the fit's wall time


def fit_once(cfg: Config, source: str) -> Fitted:
    """Prepare `source` and fit a fresh model on one thread (a study's worker process)."""
    torch.set_num_threads(1)
    data = prepare(cfg, source)
    model = new_model(cfg, data)
    start = time.perf_counter()
    history = fit(model, data.log, data.valid, cfg, progress=False)
    return Fitted(data, model, history, time.perf_counter() - start)


def train_and_export(
    cfg: Config,
    source: str,
    repository: Path,
    reports: Path,
    version: int | None = None,
    progress: bool = True,
    resume_from: Path | None = None,
    refit_all: bool = True,
) -> RunResult | None:
    """Train on `source` and evaluate; with `refit_all`, fit again on all of the data with what
    the evaluated run chose (training.fit.refit); export the refit (else the evaluated model) as
    `repository/<name>/<version>/` with the evaluated run's figures, and write the report.

    The checkpoint and report go to `reports/<name>/<version>/` (`checkpoint.pt`: the published
    weights; `heldout.pt`: the evaluated ones, beside a refit). Under `torchrun` every rank
    trains (`training.distributed`) and rank 0 alone evaluates and writes; the others get None.
    The evaluated run's state goes to `reports/<name>/training-state.pt` after every epoch;
    `resume_from` continues it from such a file (`training.fit.resume`); the refit, a known number
    of epochs, runs whole after it.

    Raises:
        ConfigError: no name for a data folder, or a state of another run (before any work).

    """
    cfg = replace(cfg, name=run_name(cfg, source))  # before any work, and in the checkpoint
    config = cfg.to_dict() | {"data": source}
    ranks = distributed.start(
        cfg.optim.collective_timeout_s, cfg.optim.device
    )  # alone unless torchrun
    try:
        state = None if resume_from is None else resume.load(resume_from, config, ranks.world)
        with distributed.main_first(ranks):
            data = prepare(cfg, source, progress and ranks.main)
        model = new_model(cfg, data)
        state_file = reports / cfg.name / resume.STATE_FILE
        started = time.perf_counter()
        history = fit(
            model,
            data.log,
            data.valid,
            cfg,
            progress and ranks.main,
            ranks,
            state_file,
            state,
            config,
            data.shards,
        )
        seconds = {"evaluated": time.perf_counter() - started}
        evaluated = learned_from(data.log, data.shards, history.best_epoch, refit=False)
        shipped, fitted = model, evaluated
        refit_history = None
        if refit_all:
            started, whole = time.perf_counter(), data.everything()
            shipped = new_model(cfg, data, whole.log)
            refit_history, fitted = refit(
                shipped, whole, cfg, history, progress and ranks.main, ranks, config
            )
            seconds["refit"] = time.perf_counter() - started
        trained_peak = peak_rss_mib()  # training's peak, before evaluation and export
    finally:
        distributed.stop(ranks)
    model.cpu()  # evaluation and export run on the CPU
    shipped.cpu()
    if not ranks.main:  # the other ranks' work is done: rank 0 evaluates and writes
        return None
    metrics, baselines = evaluate_model(model, data, cfg), evaluate_baselines(data, cfg)
    artifact = export_artifact(
        shipped,
        data.vocabs,
        data.content,
        parity_inputs(data, cfg),
        repository,
        cfg.name,
        {"metrics": metrics, "baselines": baselines, "training": config, "fit": fitted},
        version=version,
    )
    run_dir = reports / cfg.name / artifact.name
    estimate = {"metrics": metrics, "baselines": baselines}
    save_checkpoint(run_dir / CHECKPOINT, shipped, config, fitted, estimate)
    if refit_all:
        save_checkpoint(run_dir / HELDOUT_CHECKPOINT, model, config, evaluated, estimate)
    report = write_report(
        run_dir,
        f"{cfg.name} v{artifact.name} ({source}"
        + ("; published weights refit on all of the data, figures held out)" if refit_all else ")"),
        metrics,
        baselines,
        history,
        {
            "artifact": str(artifact),
            "config": config,
            "n_parameters": sum(p.numel() for p in model.parameters()),
            "head_tuning": history.heads,
            "calibration": history.calibration,
            "peak_rss_mib_training": trained_peak,
            "fit": fitted.model_dump(),
            "seconds": seconds,
            "refit_epochs": None if refit_history is None else refit_history.epochs,
        },
    )
    return RunResult(artifact, report, metrics, baselines, history, fitted)


def peak_rss_mib() -> float:
    """This process's peak resident set so far (ru_maxrss), in MiB."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 1024  # bytes there, KiB here


def parity_inputs(data: Prepared, cfg: Config) -> list[dict[str, torch.Tensor]]:
    """Graph inputs for the export parity check: up to 1,000 real test events with their
    candidates, one user with one candidate, and a cold user (unknown id, empty history)."""
    items, length = data.test.items, cfg.network.history_length
    first = Events(items.index[:N_PARITY_EVENTS], items.candidates[:N_PARITY_EVENTS])
    single = Events(items.index[:1], items.candidates[:1, :1])
    batches = [
        make_batch(data.log, e, data.tasks, length, hide_holdout=False).inputs
        for e in (first, single)
    ]
    cold = {
        "user_id": torch.tensor([UNK]),
        "history": torch.zeros((1, length), dtype=torch.int64),
        "candidate": torch.tensor([UNK]),
        "candidate_row": torch.zeros(1, dtype=torch.int64),
    }
    return [*batches, cold]
