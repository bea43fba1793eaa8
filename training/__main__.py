"""`python -m training COMMAND`: train, evaluate, export, experiment, crossval, sasrec,
relatedness, refit-study, synthesize, prepare, catalogue, events export (one module each in
training/commands/).

Flags that are not the command's own (`--optim.epochs=3`, `--network.block=shared_bottom`) override
config keys. Bad input ends with one clear `error:` line and exit status 2, not a traceback.
"""

from __future__ import annotations

import argparse
import logging
import sys

from service.artifact import ArtifactError
from training.commands import (
    catalogue,
    checkpoint,
    crossval,
    data,
    events,
    experiment,
    refit_study,
    relatedness,
    sasrec,
    train,
)
from training.config import ConfigError
from training.data.raw import DataError
from training.publish.export import ExportError

COMMANDS = (
    train,
    checkpoint,
    experiment,
    crossval,
    sasrec,
    relatedness,
    refit_study,
    data,
    catalogue,
    events,
)


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the exit status."""
    parser = argparse.ArgumentParser(prog="python -m training", description=__doc__)
    sub = parser.add_subparsers(required=True)
    for command in COMMANDS:
        command.add(sub)
    args, overrides = parser.parse_known_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)
    bad = [o for o in overrides if not o.startswith("--") or "=" not in o]
    if bad:
        parser.error(f"unrecognised arguments {bad}; config overrides look like --optim.epochs=3")
    logging.getLogger("torch.onnx").setLevel(logging.ERROR)  # the exporter's notes on torchvision
    try:
        return int(args.func(args, overrides))
    except (ConfigError, DataError, ExportError, ArtifactError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
