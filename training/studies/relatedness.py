"""What the tasks share, three ways, on an artifact's own config and split (`python -m training
relatedness`): which experts each task's gate reads (the artifact's graph, MMoE or PLE), how
their gradients on the shared parameters agree during training (every block), and what leaving
each task out does to every other task (the artifact's block). Runs go through the experiment
grid's machinery (training.studies.experiment: seeds, one thread each, `--reuse`)."""

from __future__ import annotations

import statistics
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from service.artifact import MODEL_FILE, Artifact
from training.config import ConfigError
from training.config_file import from_dict, load_config
from training.data.samples import batches
from training.pipeline.prepare import Prepared
from training.studies.artifact_split import artifact_data
from training.studies.experiment import BLOCKS, Base, Variant, run_grid
from training.studies.gates import Gate, gate_weights

EVERY_TASK = "every task"
# each task's headline figure, the first of these it has: its leave-one-out effect is read on it
HEADLINES = ("auc", "accuracy", "rmse")


@dataclass(frozen=True)
class Study:
    """Everything the report shows."""

    model: str  # models/<name>/<version>
    block: str  # the artifact's block
    tasks: list[str]
    gates: dict[str, dict[str, list[float]]]  # task -> "level <l>" -> mean weight per expert
    experts: dict[str, list[str]]  # "level <l>" -> what each weight mixes
    cosines: dict[str, dict[str, list[float]]]  # block -> "a/b" -> per epoch (seed mean)
    effects: dict[str, dict[str, tuple[float, float]]]  # measured -> dropped -> (gain, spread)
    headline: dict[str, str]  # task -> its metric
    runs: list[dict[str, Any]]


def grid(block: str, tasks: Sequence[str]) -> list[Variant]:
    """Every block with every task (their gradient cosines), and the artifact's block with each
    task left out in turn (against its every-task run)."""
    every = [
        Variant(f"{label}, {EVERY_TASK}", (f"network.block={b}",)) for b, label in BLOCKS.items()
    ]
    label = BLOCKS[block]
    return every + [
        Variant(f"{label}, without {t}", (f"network.block={block}",), dropped=t) for t in tasks
    ]


def split_users(data: Prepared, length: int) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """The graph's user inputs (user_id, history) of each test event of the split."""
    for batch in batches(data.log, data.test.items, data.tasks, length, 1024, hide_holdout=True):
        yield batch.inputs["user_id"].numpy(), batch.inputs["history"].numpy()


def run(
    artifact: Artifact,
    overrides: Sequence[str],
    seeds: Sequence[int],
    jobs: int,
    progress: bool,
    reuse: Sequence[dict[str, Any]] = (),
) -> Study:
    """Read the gates, train the grid, gather the figures.

    Raises:
        ConfigError: the overrides touch the evaluation protocol (the runs must keep the
            artifact's split) or are invalid.
    """
    if any(o.lstrip("-").startswith("eval.") for o in overrides):
        raise ConfigError("relatedness keeps the artifact's split: eval.* cannot be overridden")
    stored, source, data = artifact_data(artifact, held_out=False)
    cfg = from_dict(stored)
    load_config(stored, tuple(overrides))  # a bad override fails here, before any run
    tasks = [t.name for t in cfg.tasks]
    n_own = cfg.network.n_task_experts
    users = split_users(data, cfg.network.history_length)
    by_gate = gate_weights(artifact.path / MODEL_FILE, tasks, n_own, users)
    base = Base(stored, tuple(overrides))
    runs = run_grid(base, source, grid(cfg.network.block, tasks), seeds, jobs, progress, reuse)
    headline = {t: headline_metric(t, runs[0]["metrics"]) for t in tasks}
    return Study(
        model=str(artifact.path),
        block=cfg.network.block,
        tasks=tasks,
        gates=_gates(by_gate),
        experts={f"level {g.level}": list(g.experts) for g in by_gate},
        cosines=_cosines(runs),
        effects=_effects(runs, cfg.network.block, headline),
        headline=headline,
        runs=runs,
    )


def headline_metric(task: str, metrics: dict[str, float]) -> str:
    """The figure a task's leave-one-out effect is read on."""
    for kind in HEADLINES:
        if f"{task}_{kind}" in metrics:
            return f"{task}_{kind}"
    return next(m for m in metrics if m.startswith(f"{task}_"))


def _gates(by_gate: dict[Gate, np.ndarray]) -> dict[str, dict[str, list[float]]]:
    out: dict[str, dict[str, list[float]]] = {}
    for gate, weights in by_gate.items():
        out.setdefault(gate.task, {})[f"level {gate.level}"] = weights.tolist()
    return out


def _cosines(runs: Sequence[dict[str, Any]]) -> dict[str, dict[str, list[float]]]:
    """Per block, each pair's cosine per epoch, the mean over the seeds that reached it."""
    out: dict[str, dict[str, list[float]]] = {}
    for block, label in BLOCKS.items():
        group = [r for r in runs if r["variant"] == f"{label}, {EVERY_TASK}"]
        pairs = {p for r in group for epoch in r["grad_cosine"] for p in epoch}
        out[block] = {
            pair: [
                statistics.fmean(e[pair] for e in per_epoch if pair in e)
                for per_epoch in _by_epoch(group)
                if any(pair in e for e in per_epoch)
            ]
            for pair in sorted(pairs)
        }
    return out


def _by_epoch(group: Sequence[dict[str, Any]]) -> list[list[dict[str, float]]]:
    """The seeds' cosine figures grouped by epoch (runs may stop at different epochs)."""
    longest = max((len(r["grad_cosine"]) for r in group), default=0)
    return [
        [r["grad_cosine"][e] for r in group if e < len(r["grad_cosine"])] for e in range(longest)
    ]


def _effects(
    runs: Sequence[dict[str, Any]], block: str, headline: dict[str, str]
) -> dict[str, dict[str, tuple[float, float]]]:
    """measured task -> dropped task -> (its headline figure with every task minus without the
    dropped one, the sum of the two seed spreads): > 0 the dropped task helps the measured one
    (lower-is-better figures are turned so that > 0 still means it helps)."""
    label = BLOCKS[block]

    def figures(variant: str, metric: str) -> list[float]:
        return [r["metrics"][metric] for r in runs if r["variant"] == variant]

    out: dict[str, dict[str, tuple[float, float]]] = {}
    for measured, metric in headline.items():
        every = figures(f"{label}, {EVERY_TASK}", metric)
        sign = -1.0 if metric.endswith("rmse") else 1.0
        for dropped in headline:
            if dropped == measured:
                continue
            without = figures(f"{label}, without {dropped}", metric)
            gain = sign * (statistics.fmean(every) - statistics.fmean(without))
            spread = _std(every) + _std(without)
            out.setdefault(measured, {})[dropped] = (gain, spread)
    return out


def _std(values: list[float]) -> float:
    return statistics.stdev(values) if len(values) > 1 else 0.0
