"""`python -m training catalogue`: the next version of a published model with new items, their
vectors computed from content (same weights)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from training.commands import Subparsers, no_overrides


def add(sub: Subparsers) -> None:
    cat = sub.add_parser(
        "catalogue", help="publish the next version of a model with new items (same weights)"
    )
    cat.add_argument("--model", type=Path, required=True, help="models/<name>/<version>")
    cat.add_argument("--items", type=Path, required=True, help="new items, .csv or .parquet")
    cat.add_argument("--quiet", action="store_true", help="no progress bar")
    cat.set_defaults(func=run)


def run(args: argparse.Namespace, overrides: list[str]) -> int:
    from training.publish.catalogue import add_items

    no_overrides("catalogue", overrides, "the model's features are fixed")
    target, ignored = add_items(args.model, args.items, progress=not args.quiet)
    if ignored:
        print(f"ignored columns the model does not read: {', '.join(ignored)}")
    added = json.loads((target / "manifest.json").read_text(encoding="utf-8"))
    print(f"artifact: {target} ({added['vocabularies']['item_id']['size']} items)")
    return 0
