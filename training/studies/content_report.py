"""The item-content ablation as a report: warm and cold-item figures per variant (mean ± std over
seeds), beside random and the content popularity baseline, a verdict per metric against the
id-only model, the shuffled-text control, and bar plots."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from training.evaluation.cold import PREFIX
from training.studies.experiment_report import LOWER_IS_BETTER, plot, summarise, table

IDS_ONLY = "ids only"
CONTROL = "all, text shuffled across items"


def gap(
    summary: dict[str, dict[str, tuple[float, float]]], a: str, b: str, metric: str
) -> tuple[float, str]:
    """(a - b in the metric's better direction, verdict) with a tie within the two spreads."""
    (mean_a, std_a), (mean_b, std_b) = summary[a][metric], summary[b][metric]
    gain = (mean_b - mean_a) if metric.endswith(LOWER_IS_BETTER) else (mean_a - mean_b)
    verdict = "tie" if abs(gain) <= std_a + std_b else ("helps" if gain > 0 else "hurts")
    return gain, verdict


def verdict_line(
    summary: dict[str, dict[str, tuple[float, float]]],
    variant: str,
    against: str,
    metrics: Sequence[str],
) -> str:
    """One list item: every metric's gap of `variant` over `against`, with its verdict."""
    cells = []
    for m in metrics:
        gain, verdict = gap(summary, variant, against, m)
        cells.append(f"{m} {gain:+.4f} ({verdict})")
    return f"- **{variant}** against {against}: " + ", ".join(cells)


def verdicts(
    summary: dict[str, dict[str, tuple[float, float]]], metrics: Sequence[str]
) -> list[str]:
    """Per variant and metric: against ids only; the control against all features."""
    lines = []
    for variant in summary:
        if variant == IDS_ONLY:
            continue
        against = "all features" if variant == CONTROL else IDS_ONLY
        if against in summary:
            lines.append(verdict_line(summary, variant, against, metrics))
    return lines


def write(
    folder: Path,
    runs: list[dict[str, Any]],
    tasks: Sequence[str],
    baselines: dict[str, float],
    random: dict[str, float],
    command: str,
) -> Path:
    """content.md + content.png in `folder`; returns the markdown path."""
    first = runs[0]["metrics"]
    shown = [m for m in first if m.removesuffix("_accuracy") + "_auc" not in first]
    warm = [m for m in shown if not m.startswith(PREFIX) and not m.endswith("macro_f1")]
    cold = [m for m in shown if m.startswith(PREFIX)]
    summary = summarise(runs, "metrics", tasks)
    plot({"mean over seeds": summary}, [*cold, *warm], folder / "content.png")
    seeds = sorted({r["seed"] for r in runs})
    text = "\n".join(
        [
            "# What item content buys",
            "",
            f"Command: `{command}` ({len(runs)} runs, seeds {seeds}; mean ± std over seeds).",
            "Cold items: the evaluation protocol's cold-item split (DESIGN.md): a fixed 15% of",
            "the items with at least 5 interactions never seen in training or validation,",
            "scored from their content. Warm: the usual protocol on the remaining items.",
            "A gap within the two spreads is a tie.",
            "",
            "## Verdicts",
            "",
            *verdicts(summary, [*cold, *warm]),
            "",
            "## Cold items",
            "",
            table(summary, cold, baselines),
            "Baseline row: content popularity (ridge on the non-text features). Random "
            "(expected): " + ", ".join(f"{k} {v:.4f}" for k, v in random.items()) + ".",
            "",
            "## Warm items",
            "",
            table(summary, warm, baselines),
            "![content ablation](content.png)",
            "",
        ]
    )
    path = folder / "content.md"
    path.write_text(text, encoding="utf-8")
    return path
