"""`python -m training sasrec`: SASRec, the ranking anchor, trained on a held-out model's split
and compared with it on the same test events."""

from __future__ import annotations

import argparse
from pathlib import Path

from training.commands import Subparsers, command_line, no_overrides
from training.config import ConfigError
from training.studies.experiment import default_jobs
from training.studies.sasrec import LOSSES, SASRecConfig


def add(sub: Subparsers) -> None:
    sas = sub.add_parser(
        "sasrec",
        help="train SASRec, the ranking anchor, on a model's split and compare the model with "
        "it on the same test events -> sasrec.md (sasrec-ce.md with --loss ce)",
    )
    sas.add_argument("--model", type=Path, required=True, help="models/<name>/<version>")
    sas.add_argument("--seeds", type=int, default=3, help="SASRec seeds (0, 1, ...)")
    sas.add_argument(
        "--jobs", type=int, default=default_jobs(), help="seeds trained at once (1 thread each)"
    )
    sas.add_argument(
        "--epochs", type=int, default=SASRecConfig.epochs, help="SASRec epochs at most"
    )
    sas.add_argument(
        "--loss",
        choices=LOSSES,
        default="bce",
        help="bce: each next item against one sampled item (the paper's); ce: a softmax over "
        "every trained item (RecBole's default)",
    )
    sas.add_argument("--resamples", type=int, default=1000, help="bootstrap resamples of the users")
    sas.add_argument("--out", type=Path, default=Path("reports"), help="folder of the report")
    sas.set_defaults(func=run)


def run(args: argparse.Namespace, overrides: list[str]) -> int:
    from service.repository import verify_folder
    from training.studies.ranking_anchor import compare
    from training.studies.ranking_anchor_report import save

    no_overrides("sasrec", overrides, "it takes the artifact's config")
    if min(args.seeds, args.jobs, args.epochs, args.resamples) < 1:
        raise ConfigError("--seeds, --jobs, --epochs and --resamples must be >= 1")
    settings = SASRecConfig(epochs=args.epochs, loss=args.loss)
    results = compare(
        verify_folder(args.model), settings, range(args.seeds), args.jobs, args.resamples
    )
    path = save(results, args.out, command_line(args.argv))
    print(f"report: {path} (+ .png, .json)")
    return 0
