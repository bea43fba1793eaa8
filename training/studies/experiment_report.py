"""The experiment grid as a report: mean +- std tables (all users, cold users), a verdict per
metric (best multi-task variant against the single-task model of that task), and bar plots."""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only, no display
import matplotlib.pyplot as plt  # noqa: E402

LOWER_IS_BETTER = ("logloss", "rmse")


def metric_task(metric: str, tasks: Sequence[str]) -> str:
    """The task a metric measures (ranking metrics belong to the interaction task, tasks[0])."""
    return next((t for t in tasks if metric.startswith(f"{t}_")), tasks[0])


def summarise(
    runs: list[dict[str, Any]], part: str, tasks: Sequence[str]
) -> dict[str, dict[str, tuple[float, float]]]:
    """{variant: {metric: (mean, std)}} over seeds; a single-task variant keeps its task only."""
    by_variant: dict[str, list[dict[str, Any]]] = {}
    for run in runs:
        by_variant.setdefault(run["variant"], []).append(run)
    out: dict[str, dict[str, tuple[float, float]]] = {}
    for name, group in by_variant.items():
        alone = group[0]["alone"]
        figures = {
            m: [r[part][m] for r in group]
            for m in group[0][part]
            if alone is None or metric_task(m, tasks) == alone
        }
        figures |= {"parameters": [r["parameters"] for r in group]}
        figures |= {
            "seconds": [r["seconds"] for r in group],
            "epochs": [r["epochs"] for r in group],
        }
        out[name] = {m: _mean_std(v) for m, v in figures.items()}
    return out


def _mean_std(values: list[float]) -> tuple[float, float]:
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def verdicts(
    summary: dict[str, dict[str, tuple[float, float]]], metrics: Sequence[str], tasks: Sequence[str]
) -> list[str]:
    """Per metric: the best multi-task variant against the task's single-task model; a gap
    within the sum of the two standard deviations is called a tie."""
    lines = []
    for m in metrics:
        single = summary.get(f"single-task {metric_task(m, tasks)}", {}).get(m)
        lower = m.endswith(LOWER_IS_BETTER)
        multi = {v: f[m] for v, f in summary.items() if not v.startswith("single-task") and m in f}
        if single is None or not multi:
            continue
        best = (min if lower else max)(multi, key=lambda v: multi[v][0])
        (mean, std), (s_mean, s_std) = multi[best], single
        gain = (s_mean - mean) if lower else (mean - s_mean)
        verdict = (
            "tie"
            if abs(gain) <= std + s_std
            else ("multi-task wins" if gain > 0 else "single-task wins")
        )
        lines.append(
            f"- {m}: best multi-task {best} {mean:.4f} ± {std:.4f} vs single-task "
            f"{s_mean:.4f} ± {s_std:.4f}: **{verdict}** ({gain:+.4f})"
        )
    return lines


def table(
    summary: dict[str, dict[str, tuple[float, float]]],
    metrics: Sequence[str],
    baselines: dict[str, float] | None = None,
) -> str:
    """Markdown: one row per variant, mean ± std per metric, then parameters, time, epochs."""
    header = ["variant", *metrics, "parameters", "train s", "epochs"]
    rows = ["| " + " | ".join(header) + " |", "|---" + "|---:" * (len(header) - 1) + "|"]
    if baselines is not None:
        cells = [f"{baselines[m]:.4f}" if m in baselines else "" for m in metrics]
        rows.append(
            "| baseline (popularity / majority) | " + " | ".join([*cells, "", "", ""]) + " |"
        )
    for variant, figures in summary.items():
        cells = [_cell(figures.get(m)) for m in metrics]
        params, seconds, epochs = figures["parameters"], figures["seconds"], figures["epochs"]
        cells += [
            f"{params[0] / 1000:.0f}k",
            f"{seconds[0]:.0f} ± {seconds[1]:.0f}",
            f"{epochs[0]:.1f}",
        ]
        rows.append(f"| {variant} | " + " | ".join(cells) + " |")
    return "\n".join(rows) + "\n"


def _cell(value: tuple[float, float] | None) -> str:
    return "" if value is None else f"{value[0]:.4f} ± {value[1]:.4f}"


def plot(
    summaries: dict[str, dict[str, dict[str, tuple[float, float]]]],
    metrics: Sequence[str],
    path: Path,
) -> None:
    """One panel per metric: a bar per variant that has it, with its std as error bar, one
    colour per part (all users, cold users)."""
    first = next(iter(summaries.values()))
    n_cols = 3
    n_rows = -(-len(metrics) // n_cols)
    most = max(sum(m in f for f in first.values()) for m in metrics)
    fig, axes = plt.subplots(
        n_rows, n_cols, figsize=(5 * n_cols, (0.3 * most + 1.2) * n_rows), squeeze=False
    )
    height = 0.8 / len(summaries)
    for ax, m in zip(axes.flat, metrics, strict=False):
        variants = [v for v, f in first.items() if m in f]
        for j, (part, summary) in enumerate(summaries.items()):
            figures = [summary[v].get(m, (float("nan"), 0.0)) for v in variants]
            ax.barh(
                [i + j * height for i in range(len(variants))],
                [mean for mean, _ in figures],
                height,
                xerr=[std for _, std in figures],
                label=part,
            )
        ax.set_yticks([i + height / 2 for i in range(len(variants))], variants, fontsize=7)
        ax.invert_yaxis()
        ax.set_title(m)
        low = min(s[v][m][0] for s in summaries.values() for v in variants if m in s[v])
        ax.set_xlim(left=max(0.0, low - 0.05))
    for ax in axes.flat[len(metrics) :]:
        ax.set_visible(False)
    axes[0][0].legend(fontsize="small")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def write(
    folder: Path,
    runs: list[dict[str, Any]],
    tasks: Sequence[str],
    baselines: dict[str, float],
    command: str,
    cold_interactions: int,
) -> Path:
    """experiments.md + experiments.png in `folder`; returns the markdown path."""
    first = runs[0]["metrics"]  # a binary user task's accuracy adds nothing beside its AUC
    metrics = [m for m in first if m.removesuffix("_accuracy") + "_auc" not in first]
    overall, cold = summarise(runs, "metrics", tasks), summarise(runs, "cold", tasks)
    seeds = sorted({r["seed"] for r in runs})
    plot({"all users": overall, "cold users": cold}, metrics, folder / "experiments.png")
    text = "\n".join(
        [
            "# What multi-task learning buys",
            "",
            f"Command: `{command}` ({len(runs)} runs, seeds {seeds}; mean ± std over seeds).",
            "Test split of the evaluation protocol (DESIGN.md). Single-task rows: the same network",
            "with every other task's loss weight at 0, so only their own task's figures exist.",
            "",
            "## Verdicts (all users)",
            "",
            *verdicts(overall, metrics, tasks),
            "",
            "## Verdicts (cold users)",
            "",
            *verdicts(cold, metrics, tasks),
            "",
            "## All users",
            "",
            table(overall, metrics, baselines),
            "## Cold users",
            "",
            "The same test events seen as new users: id unknown, history cut to their first "
            f"{cold_interactions} interactions (MovieLens-100K has no user with fewer than 20 "
            "ratings, so cold users are simulated). The models did train on these users' later "
            "interactions (their item vectors carry them), so real new users may fare a little "
            "worse.",
            "",
            table(cold, metrics),
            "![experiment figures](experiments.png)",
            "",
        ]
    )
    path = folder / "experiments.md"
    path.write_text(text, encoding="utf-8")
    return path
