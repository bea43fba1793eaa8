"""One module per `python -m training` command: its flags (`add`) and what it runs, each a thin
layer over training.pipeline and training.studies that prints what the user needs next."""

from __future__ import annotations

import argparse
import shlex
from typing import TypeAlias

from training.config import Config, ConfigError
from training.config_file import load_config


def command_line(argv: list[str]) -> str:
    """The command as the user typed it, for a report to say how it was made."""
    return shlex.join(["python", "-m", "training", *argv])


# what `add(sub)` of each command module receives
Subparsers: TypeAlias = "argparse._SubParsersAction[argparse.ArgumentParser]"


def named_config(args: argparse.Namespace, overrides: list[str]) -> Config:
    """The config of `--config` with the overrides, and `--name` when given."""
    return load_config(args.config, [*overrides, *([f"--name={args.name}"] if args.name else [])])


def no_overrides(command: str, overrides: list[str], why: str) -> None:
    """Refuse config overrides for a command that takes none."""
    if overrides:
        raise ConfigError(f"{command}: config overrides are not allowed ({why})")
