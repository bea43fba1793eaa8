"""`python -m training synthesize` and `prepare`: a synthetic log of any size, and a log of any
size made ready to stream (vocabularies, split and sample shards, out of core)."""

from __future__ import annotations

import argparse
from pathlib import Path

from training.commands import Subparsers, named_config, no_overrides
from training.config import ConfigError


def add(sub: Subparsers) -> None:
    syn = sub.add_parser(
        "synthesize", help="write a synthetic log of any size as Parquet shards (bounded memory)"
    )
    syn.add_argument("--users", type=int, required=True)
    syn.add_argument("--items", type=int, required=True)
    syn.add_argument("--interactions", type=int, required=True, help="in all, about")
    syn.add_argument("--out", type=Path, required=True, help="a new folder (--data takes it)")
    syn.add_argument("--factors", type=int, default=8, help="hidden factors per user and item")
    syn.add_argument("--seed", type=int, default=0)
    syn.add_argument("--shard-rows", type=int, default=1_000_000, help="interactions per shard")
    syn.add_argument("--quiet", action="store_true", help="no progress bar")
    syn.set_defaults(func=synthesize)
    prep = sub.add_parser(
        "prepare",
        help="vocabularies, split and sample shards of a log of any size (out of core, DuckDB)",
    )
    prep.add_argument("--data", required=True, help="a folder of tables (or movielens, synthetic)")
    prep.add_argument("--out", type=Path, required=True, help="the prepared folder (replaced)")
    prep.add_argument(
        "--config", type=Path, help="the TOML config training will use (tasks, features, L)"
    )
    prep.add_argument("--name", help="the model's name (a data folder needs one, as in train)")
    prep.add_argument(
        "--memory-limit", default="4GB", help="DuckDB's memory limit (it spills past it to disk)"
    )
    prep.add_argument(
        "--shard-events",
        type=int,
        help="training events per sample shard, whole users (default 250,000)",
    )
    prep.add_argument(
        "--no-refit",
        dest="refit",
        action="store_false",
        help="leave out the refit's shards (every event as a training event); the folder then "
        "trains with train --no-refit only, and prepare sorts and writes the log once, not twice",
    )
    prep.add_argument("--quiet", action="store_true", help="no progress bar")
    prep.set_defaults(func=prepare)


def synthesize(args: argparse.Namespace, overrides: list[str]) -> int:
    from training.data.synthesize import Size
    from training.data.synthesize import synthesize as write

    no_overrides("synthesize", overrides, "its flags are the whole of it")
    size = Size(args.users, args.items, args.interactions, args.factors, args.seed, args.shard_rows)
    written = write(size, args.out, progress=not args.quiet)
    print(", ".join(f"{name}: {rows:,} rows" for name, rows in written.items()), f"in {args.out}")
    return 0


def prepare(args: argparse.Namespace, overrides: list[str]) -> int:
    from training.data.prepare import prepare_folder

    cfg = named_config(args, overrides)
    if args.shard_events is not None and args.shard_events < 1:
        raise ConfigError("--shard-events must be >= 1")
    sizes = {} if args.shard_events is None else {"shard_events": args.shard_events}
    manifest = prepare_folder(
        cfg,
        args.data,
        args.out,
        args.memory_limit,
        **sizes,
        progress=not args.quiet,
        refit=args.refit,
    )
    print(
        f"{manifest['interactions']:,} interactions, {manifest['train_events']:,} training "
        f"events in {len(manifest['shards'])} shard(s), {manifest['n_users'] - 2:,} users, "
        f"{manifest['n_items'] - 2:,} items: {args.out} (train --data {args.out})"
    )
    if manifest["refit"]:
        print(f"the refit's shards: {manifest['refit']['events']:,} events (every interaction)")
    return 0
