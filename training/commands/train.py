"""`python -m training train`: train, evaluate, refit, export an artifact, write a report."""

from __future__ import annotations

import argparse
from pathlib import Path

from training.commands import Subparsers, named_config
from training.fit.report import markdown_table


def add(sub: Subparsers) -> None:
    train = sub.add_parser("train", help="train, evaluate, export an artifact, write a report")
    train.add_argument("--config", type=Path, help="TOML config (default: built-in defaults)")
    train.add_argument(
        "--data", default="movielens", help="movielens | synthetic | a folder of CSV/Parquet tables"
    )
    train.add_argument(
        "--name",
        help="the model's name, models/<name>/ (default: the config's `name`; built-in sources "
        "are named after themselves, a data folder needs one)",
    )
    train.add_argument("--out", type=Path, default=Path("models"), help="model repository")
    train.add_argument(
        "--reports",
        type=Path,
        default=Path("reports"),
        help="where reports/<name>/<version>/ (report + checkpoint) go",
    )
    train.add_argument("--version", type=int, help="version to write (default: highest + 1)")
    train.add_argument(
        "--resume",
        type=Path,
        help="continue the run whose state this is (reports/<name>/training-state.pt, written "
        "after every epoch); same config and data, except optim.epochs and optim.patience",
    )
    train.add_argument(
        "--no-refit",
        dest="refit",
        action="store_false",
        help="publish the evaluated model, trained without the held-out data (for studies); "
        "by default the published model is refit on all of the data with the epochs, head "
        "tuning and temperatures the evaluated run chose, and carries its figures as the "
        "estimate",
    )
    train.add_argument("--quiet", action="store_true", help="no progress bars")
    train.set_defaults(func=run)


def run(args: argparse.Namespace, overrides: list[str]) -> int:
    from training.pipeline.run import train_and_export

    result = train_and_export(
        named_config(args, overrides),
        args.data,
        args.out,
        args.reports,
        version=args.version,
        progress=not args.quiet,
        resume_from=args.resume,
        refit_all=args.refit,
    )
    if result is None:  # a rank other than 0 under torchrun: rank 0 reports
        return 0
    name, fit = result.artifact.parent.name, result.fit
    print(markdown_table(f"{name} (test split, held out)", result.metrics, result.baselines))
    print(f"best epoch {result.history.best_epoch} of {len(result.history.epochs)}")
    if fit.refit:
        print(
            f"refit on all of the data ({fit.epochs} epochs): {fit.events:,} events, "
            f"{fit.users:,} users, {fit.items:,} items; the figures above are its estimate"
        )
    print(f"artifact: {result.artifact}")
    print(f"report:   {result.report['md']} (+ .json, curves.png)")
    return 0
