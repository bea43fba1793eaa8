"""`python -m training events export`: the service's event log (HYDRAREC_STORE_URL) as a data
folder to train the next version on."""

from __future__ import annotations

import argparse
from pathlib import Path

from training.commands import Subparsers, no_overrides


def add(sub: Subparsers) -> None:
    events = sub.add_parser("events", help="the service's event store: export its log")
    actions = events.add_subparsers(required=True)
    export = actions.add_parser(
        "export", help="write the event log as a data folder (train --data OUT reads it)"
    )
    export.add_argument(
        "--store",
        required=True,
        help="the service's store: sqlite:///PATH or redis://HOST:PORT/DB (HYDRAREC_STORE_URL)",
    )
    export.add_argument("--out", type=Path, required=True, help="a new (or empty) folder")
    export.add_argument(
        "--base",
        help="the data the current model was trained on (a folder, movielens or synthetic): "
        "its tables first, then the events, users and items completed with the new ids",
    )
    export.add_argument("--quiet", action="store_true", help="no progress bar")
    export.set_defaults(func=run)


def run(args: argparse.Namespace, overrides: list[str]) -> int:
    from training.data.events_export import export_events

    no_overrides("events export", overrides, "it copies the log as it is")
    counts = export_events(args.store, args.out, args.base, progress=not args.quiet)
    print(
        f"{counts['events']:,} events exported; {counts['interactions']:,} interactions, "
        f"{counts['users']:,} users, {counts['items']:,} items in {args.out} "
        f"(make train DATA={args.out})"
    )
    return 0
