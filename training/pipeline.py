"""The steps from a data source to a published artifact and a report, as callable functions.

`prepare` (tables -> vocabularies -> split -> evaluation sets), `train_and_export` (fit, evaluate,
checkpoint, export, report) and the evaluation helpers; the CLI and the tests call these.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from service.artifact import UNK, TaskSpec
from training.config import Config
from training.data.samples import Events, make_batch
from training.data.split import TEST, VALID, Log, build_log
from training.data.tables import Tables, load_tables
from training.data.vocab import Vocab, resolve_tasks
from training.evaluate import (
    EvalSets,
    baseline_predictor,
    eval_sets,
    model_predictor,
    task_metrics,
)
from training.export import export_artifact
from training.network.recommender import ModelArgs, MultiTaskRecommender
from training.report import write_report
from training.train import History, fit, save_checkpoint

N_PARITY_EVENTS = 1000


@dataclass(frozen=True)
class Prepared:
    """Data ready for training and evaluation."""

    tables: Tables
    tasks: tuple[TaskSpec, ...]  # classes resolved from the data
    vocabs: dict[str, Vocab]
    log: Log
    valid: EvalSets
    test: EvalSets


@dataclass(frozen=True)
class RunResult:
    """What a training run produced."""

    artifact: Path
    report: dict[str, Path]
    metrics: dict[str, float]
    baselines: dict[str, float]
    history: History


def prepare(cfg: Config, source: str) -> Prepared:
    """Load and validate the source, build vocabularies, split, and fix the evaluation sets."""
    tables = load_tables(source, cfg.tasks, cfg.synthetic)
    tasks = resolve_tasks(cfg.tasks, tables)
    vocabs = {
        "user_id": Vocab.build(tables.users["user_id"]),
        "item_id": Vocab.build(tables.items["item_id"]),
    }
    log = build_log(
        tables,
        vocabs["user_id"],
        vocabs["item_id"],
        tasks,
        cfg.eval.holdout_fraction,
        cfg.eval.seed,
    )
    return Prepared(
        tables, tasks, vocabs, log, eval_sets(log, VALID, cfg.eval), eval_sets(log, TEST, cfg.eval)
    )


def new_model(cfg: Config, data: Prepared) -> MultiTaskRecommender:
    """A freshly initialised network for this data (seeded)."""
    torch.manual_seed(cfg.optim.seed)
    return MultiTaskRecommender(
        ModelArgs(
            n_users=data.log.n_users,
            n_items=data.log.n_items,
            network=cfg.network,
            tasks=data.tasks,
        )
    )


def evaluate_model(model: MultiTaskRecommender, data: Prepared, cfg: Config) -> dict[str, float]:
    """Test metrics of the model under the protocol."""
    predict = model_predictor(model, data.log, data.tasks, cfg.network.history_length)
    return task_metrics(data.log, data.test, data.tasks, predict, cfg.eval.k)


def evaluate_baselines(data: Prepared, cfg: Config) -> dict[str, float]:
    """The same metrics for popularity / item rate / majority-class predictors."""
    return task_metrics(
        data.log, data.test, data.tasks, baseline_predictor(data.log, data.tasks), cfg.eval.k
    )


def train_and_export(
    cfg: Config,
    source: str,
    repository: Path,
    reports: Path,
    version: int | None = None,
    progress: bool = True,
) -> RunResult:
    """Train on `source`, evaluate, export `repository/<name>/<version>/`, write the report.

    The checkpoint and report go to `reports/<name>/<version>/`.
    """
    data = prepare(cfg, source)
    model = new_model(cfg, data)
    history = fit(model, data.log, data.valid, cfg, progress=progress)
    metrics, baselines = evaluate_model(model, data, cfg), evaluate_baselines(data, cfg)
    config = cfg.to_dict() | {"data": source}
    artifact = export_artifact(
        model,
        data.vocabs,
        parity_inputs(data, cfg),
        repository,
        cfg.name,
        {"metrics": metrics, "baselines": baselines, "training": config},
        version=version,
    )
    run_dir = reports / cfg.name / artifact.name
    save_checkpoint(run_dir / "checkpoint.pt", model, config)
    report = write_report(
        run_dir,
        f"{cfg.name} v{artifact.name} ({source})",
        metrics,
        baselines,
        history,
        {
            "artifact": str(artifact),
            "config": config,
            "n_parameters": sum(p.numel() for p in model.parameters()),
        },
    )
    return RunResult(artifact, report, metrics, baselines, history)


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
