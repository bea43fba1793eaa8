"""`python -m training relatedness`: what the tasks share, on an artifact's config and split."""

from __future__ import annotations

import argparse
from pathlib import Path

from training.commands import Subparsers, command_line
from training.config import ConfigError
from training.studies.experiment import default_jobs


def add(sub: Subparsers) -> None:
    cmd = sub.add_parser(
        "relatedness",
        help="what the tasks share: the artifact's gate weights per task, the task losses' "
        "gradient cosines per block, leave-one-task-out -> relatedness.md",
    )
    cmd.add_argument("--model", type=Path, required=True, help="models/<name>/<version>")
    cmd.add_argument("--seeds", type=int, default=3, help="seeds per run (0, 1, ...)")
    cmd.add_argument(
        "--jobs", type=int, default=default_jobs(), help="parallel runs (1 thread each)"
    )
    cmd.add_argument(
        "--reuse",
        type=Path,
        nargs="+",
        help="earlier results files (reports/relatedness.json, experiments.json): runs of the "
        "same variant, seed and config are taken instead of trained again",
    )
    cmd.add_argument("--out", type=Path, default=Path("reports"), help="folder of the report")
    cmd.add_argument("--quiet", action="store_true", help="no progress bar")
    cmd.set_defaults(func=run)


def run(args: argparse.Namespace, overrides: list[str]) -> int:
    """Config overrides (e.g. the experiment grid's smaller network) apply to the runs; the
    gates are read from the artifact as it is."""
    from service.repository import verify_folder
    from training.studies import relatedness, relatedness_report
    from training.studies.experiment import load_runs

    if args.seeds < 1 or args.jobs < 1:
        raise ConfigError("--seeds and --jobs must be >= 1")
    reuse = [r for path in args.reuse or () for r in load_runs(path)]
    study = relatedness.run(
        verify_folder(args.model), overrides, range(args.seeds), args.jobs, not args.quiet, reuse
    )
    path = relatedness_report.save(study, args.out, command_line(args.argv))
    print(f"report: {path} (+ .png, .json)")
    return 0
