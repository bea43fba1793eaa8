"""`python -m training experiment`: what multi-task learning buys, measured.

A grid of variants (one single-task model per task; shared-bottom, MMoE and PLE, each with every
loss weighting; MMoE with the ESMM like chain) is trained with several seeds on one data source
under the evaluation protocol, in parallel worker processes of one thread each. Every run's test
metrics, its cold-user metrics (the same test events seen as new users: unknown id, history cut
to their first COLD_INTERACTIONS items), wall time and parameter count go to
`experiments.json`; `experiments.md` holds mean +- std per variant and a verdict per metric, and
`experiments.png` the same as bars with error bars.

A single-task model is the same network with every other task's weight at 0, so it differs from
the multi-task ones only in what the loss asks for.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from multiprocessing import get_context
from pathlib import Path
from typing import Any

from tqdm import tqdm

from service.artifact import FeatureSpec
from training.config import WEIGHTINGS, Config, ConfigError
from training.config_file import load_config

COLD_INTERACTIONS = 5  # a cold user: at most this many interactions seen
BLOCKS = {"shared_bottom": "shared-bottom", "mmoe": "MMoE", "ple": "PLE"}


@dataclass(frozen=True)
class Variant:
    """One row of the table: config overrides, or a single task trained alone."""

    name: str
    overrides: tuple[str, ...] = ()
    alone: str | None = None  # single-task: only this task's loss counts
    dropped: str | None = None  # leave-one-task-out: this task's loss does not count
    against: str | None = None  # the quality ladder: the variant a side step is judged against


def content_grid(features: Sequence[FeatureSpec], quick: bool) -> list[Variant]:
    """The item-content ablation over the base config's features: ids only, + the non-text
    features (genres and year on MovieLens), + text (titles), all, and all with the text shuffled
    across items (a control: text that says nothing about its item must not help)."""

    def using(name: str, specs: Sequence[FeatureSpec]) -> Variant:
        dumped = [f.model_dump(mode="json", exclude_defaults=True) for f in specs]
        return Variant(name, (f"features={json.dumps(dumped)}",))

    text = [f for f in features if f.kind == "text"]
    other = [f for f in features if f.kind != "text"]
    shuffled = [f.model_copy(update={"shuffled": True}) if f in text else f for f in features]
    variants = [using("ids only", [])]
    if other:
        variants.append(using(f"+ {' and '.join(f.column for f in other)}", other))
    if text and other:
        variants.append(using(f"+ {' and '.join(f.column for f in text)}", text))
    variants.append(using("all features", features))
    if text:
        variants.append(using("all, text shuffled across items", shuffled))
    return variants[::2] if quick else variants


HEAD_EPOCHS = 4  # the quality grid's per-task head tuning (optim.head_epochs)
MORE_NEGATIVES = 16  # the quality grid's more negatives (optim.n_negatives)
CALIBRATION_USERS = 0.1  # the quality grid's calibration users (optim.calibration_users)
COSINE = "optim.lr_schedule=cosine"  # the quality grid's side step (training.fit.schedule)


def quality_grid(quick: bool) -> list[Variant]:
    """What each of issue 18's changes adds, each on top of the ones before: the base config;
    + wide profile heads; + per-task head tuning; + a sampled-softmax term in click's loss;
    + the item heads' dot product; + a full-catalogue softmax term over it; + more negatives
    per event; + temperature scaling of the profile heads. Then a side step, on the dot-product
    step (the default model's changes, none of the rejected ones beneath it): + a cosine
    learning-rate schedule."""
    steps = [
        ("+ wide profile heads", "network.wide_profile=true"),
        ("+ head tuning", f"optim.head_epochs={HEAD_EPOCHS}"),
        ("+ sampled softmax", "optim.sampled_softmax=1.0"),
        ("+ dot-product item heads", "network.item_dot=true"),
        ("+ catalogue softmax", "optim.catalogue_softmax=1.0"),
        (f"+ {MORE_NEGATIVES} negatives", f"optim.n_negatives={MORE_NEGATIVES}"),
        ("+ temperature scaling", f"optim.calibration_users={CALIBRATION_USERS}"),
    ]
    # the base: the config with every change of the ladder off (v5's default model)
    off = (
        "network.wide_profile=false",
        "optim.head_epochs=0",
        "optim.sampled_softmax=0",
        "network.item_dot=false",
        "optim.catalogue_softmax=0",
        "optim.calibration_users=0",
        "optim.lr_schedule=constant",
    )
    variants = [Variant("base config", off)]
    for name, override in steps:
        variants.append(Variant(name, (*variants[-1].overrides, override)))
    on = next(v for v in variants if v.name == "+ dot-product item heads")
    cosine = Variant("+ cosine learning rate", (*on.overrides, COSINE), against=on.name)
    return [*(variants[::2] if quick else variants), cosine]


def grid(tasks: Sequence[str], quick: bool) -> list[Variant]:
    """The full grid, or (quick) one single-task model, MMoE and PLE with fixed weights."""
    fixed = "optim.weighting=fixed"  # one loss: nothing to weigh
    singles = [Variant(f"single-task {t}", (fixed,), alone=t) for t in tasks]
    if quick:
        return [
            singles[0],
            Variant("MMoE, fixed", ("network.block=mmoe", fixed)),
            Variant("PLE, uncertainty", ("network.block=ple", "optim.weighting=uncertainty")),
        ]
    multi = [
        Variant(f"{label}, {w}", (f"network.block={block}", f"optim.weighting={w}"))
        for block, label in BLOCKS.items()
        for w in WEIGHTINGS
    ]
    esmm = Variant("MMoE, fixed, ESMM like", ("network.block=mmoe", fixed, "optim.esmm=true"))
    return [*singles, *multi, esmm]


@dataclass(frozen=True)
class Base:
    """What every run starts from: a config file (or an artifact's stored config) and the
    command line's overrides."""

    config: Path | dict[str, Any] | None
    overrides: tuple[str, ...] = ()


def variant_config(base: Base, variant: Variant, seed: int) -> Config:
    """The run's config: the base with the variant's overrides and the seed."""
    cfg = load_config(base.config, [*base.overrides, f"optim.seed={seed}", *variant.overrides])
    if variant.dropped is not None:
        tasks = [t.model_copy(update={"weight": 0.0}) if t.name == variant.dropped else t
                 for t in cfg.tasks]  # fmt: skip
        watched = cfg.optim.monitor.startswith((f"{variant.dropped}_", f"loss_{variant.dropped}"))
        if watched or (cfg.tasks[0].name == variant.dropped and "@" in cfg.optim.monitor):
            return dataclasses.replace(
                cfg, tasks=tasks, optim=dataclasses.replace(cfg.optim, monitor="loss")
            )
        return dataclasses.replace(cfg, tasks=tasks)
    if variant.alone is None:
        return cfg
    task = next(t for t in cfg.tasks if t.name == variant.alone)
    tasks = [t.model_copy(update={"weight": 1.0 if t is task else 0.0}) for t in cfg.tasks]
    monitor = f"{task.name}_auc" if task.level == "item" and task.kind == "binary" else "loss"
    return dataclasses.replace(
        cfg, tasks=tasks, optim=dataclasses.replace(cfg.optim, monitor=monitor)
    )


def run_one(base: Base, source: str, variant: Variant, seed: int) -> dict[str, Any]:
    """Train and evaluate one (variant, seed); runs in a worker process."""

    from training.evaluation.evaluate import cold_view, model_predictor, task_metrics
    from training.evaluation.protocol import evaluate_model
    from training.fit.gradients import PREFIX as GRAD_PREFIX
    from training.pipeline.run import fit_once

    cfg = variant_config(base, variant, seed)
    run = fit_once(cfg, source)
    data, model, history, seconds = run.data, run.model, run.history, run.seconds
    predict = model_predictor(model, data.log, data.tasks, cfg.network.history_length)
    cold = cold_view(data.test, COLD_INTERACTIONS)
    return {
        "variant": variant.name,
        "alone": variant.alone,
        "seed": seed,
        "metrics": evaluate_model(model, data, cfg),
        "cold": task_metrics(data.log, cold, data.tasks, predict, cfg.eval.k),
        "seconds": seconds,
        "epochs": len(history.epochs),
        "parameters": sum(p.numel() for p in model.parameters()),
        "weights": {k: v for k, v in history.epochs[-1].items() if k.startswith("weight_")},
        "grad_cosine": [  # per epoch: each task pair's gradient cosine on the shared parameters
            {k.removeprefix(GRAD_PREFIX): v for k, v in e.items() if k.startswith(GRAD_PREFIX)}
            for e in history.epochs
        ],
        "config": run_key(cfg),
    }


def run_key(cfg: Config) -> dict[str, Any]:
    """A run's whole config as its results file keeps it (JSON types): what `--reuse` matches."""
    return json.loads(json.dumps(cfg.to_dict()))


def run_grid(
    base: Base,
    source: str,
    variants: Sequence[Variant],
    seeds: Sequence[int],
    jobs: int,
    progress: bool = True,
    reuse: Sequence[dict[str, Any]] = (),
) -> list[dict[str, Any]]:
    """Every (variant, seed), `jobs` at a time; results in grid order. A run in `reuse` (runs
    of earlier results files) with the same variant, seed and whole config is taken as it is
    (the first that matches) instead of trained again. One thread and fixed seeds make a run
    repeat itself exactly on one machine; on another, float rounding moves its figures within
    the seed spreads."""
    work = [(v, s) for v in variants for s in seeds]
    done: dict[int, dict[str, Any]] = {}
    for i, (v, s) in enumerate(work):
        key = (v.name, s, json.dumps(run_key(variant_config(base, v, s)), sort_keys=True))
        for run in reuse:
            if (run["variant"], run["seed"], json.dumps(run.get("config"), sort_keys=True)) == key:
                done[i] = run
                break
    with ProcessPoolExecutor(max_workers=jobs, mp_context=get_context("spawn")) as pool:
        futures = {
            pool.submit(run_one, base, source, v, s): i
            for i, (v, s) in enumerate(work)
            if i not in done
        }
        for future in tqdm(
            as_completed(futures), total=len(futures), desc="experiment runs", disable=not progress
        ):
            done[futures[future]] = future.result()
    return [done[i] for i in range(len(work))]


def load_runs(path: Path) -> list[dict[str, Any]]:
    """The runs of a results file written by `experiment` (for `--reuse`).

    Raises:
        ConfigError: the file is missing, not JSON, or holds no list of runs.
    """
    try:
        runs = json.loads(path.read_text(encoding="utf-8"))["runs"]
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise ConfigError(f"--reuse {path}: not a results file of `experiment` ({e})") from e
    if not isinstance(runs, list) or not all(
        isinstance(r, dict) and {"variant", "seed"} <= r.keys() for r in runs
    ):
        raise ConfigError(f"--reuse {path}: its runs are not a list of runs of `experiment`")
    return runs


def default_jobs() -> int:
    """One single-threaded worker per usable core."""
    return max(1, len(os.sched_getaffinity(0)))


def save_results(path: Path, results: list[dict[str, Any]], meta: dict[str, Any]) -> None:
    """Write every run's raw figures as JSON."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({**meta, "runs": results}, indent=2) + "\n", encoding="utf-8")
