"""`python -m training crossval`: k folds of the profile holdout, a model per fold, figures over
every user with bootstrap intervals."""

from __future__ import annotations

import argparse
from pathlib import Path

from training.commands import Subparsers, command_line
from training.config import ConfigError
from training.config_file import load_config
from training.studies.crossval import N_FOLDS
from training.studies.experiment import default_jobs


def add(sub: Subparsers) -> None:
    cv = sub.add_parser(
        "crossval",
        help="k-fold profile holdout: a model per fold, figures over every user with bootstrap "
        "intervals, beside the baselines and a logistic-regression anchor -> crossval.md",
    )
    cv.add_argument("--config", type=Path, help="TOML config every fold trains")
    cv.add_argument("--data", default="movielens", help="movielens | synthetic | a folder")
    cv.add_argument("--folds", type=int, default=N_FOLDS, help="folds of the users (k)")
    cv.add_argument(
        "--jobs", type=int, default=default_jobs(), help="folds trained at once (1 thread each)"
    )
    cv.add_argument("--resamples", type=int, default=1000, help="bootstrap resamples of the users")
    cv.add_argument("--out", type=Path, default=Path("reports"), help="folder of the report")
    cv.add_argument("--quiet", action="store_true", help="no progress bars")
    cv.set_defaults(func=run)


def run(args: argparse.Namespace, overrides: list[str]) -> int:
    from training.pipeline.prepare import prepare
    from training.studies import crossval_report
    from training.studies.crossval import check_source, run_folds, summarise, with_folds
    from training.studies.experiment import Base

    base = Base(args.config, tuple(overrides))
    cfg = load_config(base.config, base.overrides)  # a bad config fails here, before any run
    check_source(args.data, args.folds)
    if args.jobs < 1 or args.resamples < 1:
        raise ConfigError("--jobs and --resamples must be >= 1")
    data = prepare(with_folds(cfg, args.folds), args.data, progress=not args.quiet)
    folds = run_folds(base, args.data, args.folds, args.jobs, not args.quiet)
    results = summarise(folds, data.log, data.tasks, cfg.eval.k, args.resamples, not args.quiet)
    path = crossval_report.write(args.out, results, command_line(args.argv))
    print(path.read_text(encoding="utf-8"))
    print(f"report: {path} (+ crossval.png, crossval.json)")
    return 0
