"""`python -m training refit-study`: each user's next interactions kept aside, one training run,
and the refit compared with the held-out model on them through /predict."""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from training.commands import Subparsers, command_line
from training.config import ConfigError
from training.config_file import load_config


def add(sub: Subparsers) -> None:
    study = sub.add_parser(
        "refit-study",
        help="keep each user's next interactions aside, train on the rest, and compare the "
        "refit with the held-out model on them through /predict -> refit-<config>.md",
    )
    study.add_argument("--config", type=Path, help="TOML config (default: built-in defaults)")
    study.add_argument("--data", default="movielens", help="movielens | synthetic | a folder")
    study.add_argument(
        "--negatives", type=int, default=100, help="untouched items the next item is ranked among"
    )
    study.add_argument("--resamples", type=int, default=1000, help="bootstrap resamples of users")
    study.add_argument(
        "--work",
        type=Path,
        help="keep the cut folder and both models here (default: a temporary folder); a folder "
        "of an earlier run of the same study is asked again without training",
    )
    study.add_argument("--out", type=Path, default=Path("reports"), help="folder of the report")
    study.add_argument("--quiet", action="store_true", help="no progress bars")
    study.set_defaults(func=run)


def run(args: argparse.Namespace, overrides: list[str]) -> int:
    from training.studies import refit_report, refit_study

    cfg = load_config(args.config, overrides)
    if args.negatives < cfg.eval.k or args.resamples < 1:
        raise ConfigError("--negatives must be >= eval.k and --resamples >= 1")
    label = args.config.stem if args.config else "defaults"
    with tempfile.TemporaryDirectory(prefix="refit-study-") as scratch:
        work = args.work or Path(scratch)
        results = refit_study.run(
            cfg, label, args.data, work, args.negatives, args.resamples, not args.quiet
        )
    path = refit_report.write(args.out, f"refit-{label}", results, command_line(args.argv))
    print(path.read_text(encoding="utf-8"))
    print(f"report: {path} (+ .png, .json)")
    return 0
