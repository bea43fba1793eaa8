"""The quality ladder as a report: each change of issue 18 added to the ones before (mean ± std
over seeds, warm and cold-item figures), a verdict per metric against the step before, and bar
plots."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from training.evaluation.cold import PREFIX
from training.studies.content_report import verdict_line
from training.studies.experiment_report import plot, summarise, table


def verdicts(
    summary: dict[str, dict[str, tuple[float, float]]],
    metrics: Sequence[str],
    against: Mapping[str, str],
) -> list[str]:
    """Per step and metric: against the step before it, or a side step against the step
    `against` names for it (a gap within the two spreads: tie)."""
    steps = list(summary)
    return [
        verdict_line(summary, after, against.get(after, before), metrics)
        for before, after in zip(steps, steps[1:], strict=False)
    ]


def write(
    folder: Path,
    runs: list[dict[str, Any]],
    tasks: Sequence[str],
    baselines: dict[str, float],
    command: str,
    against: Mapping[str, str],
) -> Path:
    """quality.md + quality.png in `folder` (`against`: each side step's reference step);
    returns the markdown path."""
    first = runs[0]["metrics"]
    shown = [m for m in first if not m.endswith(("macro_f1", "_ece"))]
    warm = [m for m in shown if not m.startswith(PREFIX)]
    cold = [m for m in shown if m.startswith(PREFIX)]
    summary = summarise(runs, "metrics", tasks)
    plot({"mean over seeds": summary}, warm, folder / "quality.png")
    seeds = sorted({r["seed"] for r in runs})
    text = "\n".join(
        [
            "# What each quality change adds",
            "",
            f"Command: `{command}` ({len(runs)} runs, seeds {seeds}; mean ± std over seeds).",
            "Each step adds one change to the ones before it (a side step, to the step named in",
            "its verdict), on the evaluation protocol's single split (189 holdout users:",
            "`python -m training crossval` gives the figures that do not hang on them). A gap",
            "is signed so that positive is better (a log loss that falls is a gain); a gap",
            "within the two spreads is a tie.",
            "",
            "## Verdicts",
            "",
            *verdicts(summary, [*warm, *cold], against),
            "",
            "## Warm items and profiles",
            "",
            table(summary, warm, baselines),
            "## Cold items",
            "",
            table(summary, cold, baselines),
            "![quality ladder](quality.png)",
            "",
        ]
    )
    path = folder / "quality.md"
    path.write_text(text, encoding="utf-8")
    return path
