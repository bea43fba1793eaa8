"""`python -m training experiment`: a grid of variants trained with several seeds, and its report
(the multi-task grid, the item-content ablation, or the quality ladder)."""

from __future__ import annotations

import argparse
from pathlib import Path

from training.commands import Subparsers, command_line
from training.config import ConfigError
from training.config_file import load_config
from training.studies.experiment import default_jobs

REPORTS = {"content": "content", "quality": "quality", "multitask": "experiments"}


def add(sub: Subparsers) -> None:
    exp = sub.add_parser(
        "experiment", help="train the multi-task vs single-task grid, write the comparison"
    )
    exp.add_argument("--config", type=Path, help="TOML config every run starts from")
    exp.add_argument("--data", default="movielens", help="movielens | synthetic | a folder")
    exp.add_argument("--seeds", type=int, default=3, help="seeds per variant (0, 1, ...)")
    exp.add_argument(
        "--jobs", type=int, default=default_jobs(), help="parallel runs (1 thread each)"
    )
    exp.add_argument(
        "--grid",
        choices=tuple(REPORTS),
        default="multitask",
        help="multitask: single- vs multi-task variants -> experiments.md; content: the item "
        "content ablation (ids only, + features, shuffled text) -> content.md; quality: what "
        "each quality change adds -> quality.md",
    )
    exp.add_argument("--quick", action="store_true", help="a smaller grid (CI, smoke runs)")
    exp.add_argument(
        "--reuse",
        type=Path,
        nargs="+",
        help="earlier results files (e.g. reports/quality.json): their runs of the same variant, "
        "seed and config are taken instead of trained again (the first file's where several "
        "match)",
    )
    exp.add_argument("--out", type=Path, default=Path("reports"), help="folder of the report")
    exp.add_argument("--quiet", action="store_true", help="no progress bar")
    exp.set_defaults(func=run)


def run(args: argparse.Namespace, overrides: list[str]) -> int:
    from training.evaluation.cold import random_figures
    from training.evaluation.protocol import evaluate_baselines
    from training.pipeline.prepare import prepare
    from training.studies import content_report, experiment_report, quality_report
    from training.studies.experiment import (
        COLD_INTERACTIONS,
        Base,
        content_grid,
        grid,
        load_runs,
        quality_grid,
        run_grid,
        save_results,
    )

    base = Base(args.config, tuple(overrides))
    cfg = load_config(base.config, base.overrides)  # a bad config fails here, before any run
    if args.seeds < 1 or args.jobs < 1:
        raise ConfigError("--seeds and --jobs must be >= 1")
    if args.grid == "content" and not cfg.features:
        raise ConfigError("--grid content needs a config with [[features]] to ablate")
    data = prepare(cfg, args.data, progress=not args.quiet)  # embeds the texts once, for all
    tasks = [t.name for t in cfg.tasks]
    variants = {
        "content": lambda: content_grid(cfg.features, args.quick),
        "quality": lambda: quality_grid(args.quick),
        "multitask": lambda: grid(tasks, args.quick),
    }[args.grid]()
    reuse = [run for path in args.reuse or () for run in load_runs(path)]
    runs = run_grid(base, args.data, variants, range(args.seeds), args.jobs, not args.quiet, reuse)
    args.out.mkdir(parents=True, exist_ok=True)
    command, stem = command_line(args.argv), REPORTS[args.grid]
    save_results(args.out / f"{stem}.json", runs, {"command": command, "data": args.data})
    baselines = evaluate_baselines(data, cfg)
    if args.grid == "content":
        random = random_figures(cfg.eval, data.tasks)
        path = content_report.write(args.out, runs, tasks, baselines, random, command)
    elif args.grid == "quality":
        against = {v.name: v.against for v in variants if v.against}
        path = quality_report.write(args.out, runs, tasks, baselines, command, against)
    else:
        path = experiment_report.write(args.out, runs, tasks, baselines, command, COLD_INTERACTIONS)
    print(f"report: {path} (+ {stem}.png, {stem}.json)")
    return 0
