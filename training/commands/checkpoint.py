"""`python -m training evaluate` and `export`: a saved checkpoint's test figures, or the
checkpoint published as a new artifact (optionally quantised)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from training.commands import Subparsers, no_overrides
from training.fit.report import markdown_table
from training.publish.export import QUANTIZATIONS

WHY = "evaluate/export use the checkpoint's config"


def add(sub: Subparsers) -> None:
    for name, func, text in (
        (
            "evaluate",
            evaluate,
            "print test metrics of a checkpoint, sampled and over the full catalogue",
        ),
        ("export", export, "export a checkpoint as a new artifact"),
    ):
        cmd = sub.add_parser(name, help=text)
        cmd.add_argument("--checkpoint", type=Path, required=True)
        cmd.add_argument("--data", help="data source (default: the one it was trained on)")
        if name == "export":
            cmd.add_argument("--out", type=Path, default=Path("models"))
            cmd.add_argument("--version", type=int)
            cmd.add_argument(
                "--quantize",
                choices=QUANTIZATIONS,
                help="onnxruntime dynamic quantisation; prints its metrics beside float32's",
            )
        cmd.set_defaults(func=func)


def evaluate(args: argparse.Namespace, overrides: list[str]) -> int:
    from training.evaluation.full_catalogue import table
    from training.pipeline.checkpoint import evaluate_checkpoint

    no_overrides("evaluate", overrides, WHY)
    evaluated = evaluate_checkpoint(args.checkpoint, args.data)
    print(markdown_table(evaluated.title, evaluated.metrics, evaluated.baselines))
    print()
    print(table(evaluated.full))
    if evaluated.cold is not None:
        print()
        print(table(evaluated.cold, "cold items, full catalogue"))
    return 0


def export(args: argparse.Namespace, overrides: list[str]) -> int:
    from training.pipeline.checkpoint import export_checkpoint

    no_overrides("export", overrides, WHY)
    target, metrics = export_checkpoint(
        args.checkpoint, args.out, args.data, args.version, args.quantize
    )
    print(f"artifact: {target}")
    if args.quantize:
        quantized = json.loads((target / "manifest.json").read_text(encoding="utf-8"))["metrics"]
        print(f"| metric | float32 | {args.quantize} | change |\n|---|---:|---:|---:|")
        for key, value in metrics.items():
            print(f"| {key} | {value:.4f} | {quantized[key]:.4f} | {quantized[key] - value:+.4f} |")
    return 0
