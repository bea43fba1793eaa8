"""The cross-validation as a report: crossval.md (every figure with its interval, fold mean
and spread, the baselines and the logistic-regression anchor, targets), crossval.json (all of
it) and crossval.png (the intervals side by side, and the profile heads' reliability diagrams)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only, no display
import matplotlib.pyplot as plt  # noqa: E402

from training.studies.crossval import ANCHOR, BASELINE, MODEL  # noqa: E402

# Issue 18's goals for one model, all at once, cross-validated.
TARGETS = {
    "like_auc": 0.80,
    "hr@10": 0.83,
    "ndcg@10": 0.53,
    "gender_auc": 0.80,
    "age_accuracy": 0.47,
    "occupation_accuracy": 0.26,
}
COLOURS = {MODEL: "C0", ANCHOR: "C1", BASELINE: "C2"}  # one colour per predictor in every panel
HEADLINE = ("click_auc", "hr@10", "ndcg@10", "like_auc", *TARGETS)


def write(out: Path, results: dict[str, Any], command: str) -> Path:
    """crossval.{md,json,png} in `out`; returns the markdown path."""
    out.mkdir(parents=True, exist_ok=True)
    (out / "crossval.json").write_text(
        json.dumps({"command": command, **results}, indent=2) + "\n", encoding="utf-8"
    )
    _plot(out / "crossval.png", results)
    path = out / "crossval.md"
    path.write_text(markdown(results, command), encoding="utf-8")
    return path


def _cell(figure: dict[str, float] | None) -> str:
    if figure is None:
        return ""
    return f"{figure['value']:.3f} [{figure['low']:.3f}, {figure['high']:.3f}]"


def markdown(results: dict[str, Any], command: str) -> str:
    """The report's text."""
    figures, spread = results["figures"], results["fold_mean_std"]
    folds = results["folds"]
    metrics = list(figures[MODEL])
    lines = [
        f"# Cross-validation: {len(folds)} folds of the profile holdout\n",
        f"`{command}`\n",
        f"Every one of the {results['n_users']} users is held out once (fold sizes "
        f"{', '.join(str(f['n_holdout']) for f in folds)}); each user's figures come from the "
        "model of their fold, which never read their profile labels. A figure is the mean over "
        "the folds (weighted by their users) of each fold model's figure on its own users, with "
        "a 95% percentile-bootstrap interval (users resampled within each fold); beside it, "
        "each fold model's figure on every test event (mean +- std over the folds; the profile "
        "figures are on the fold's own users either way).\n",
        f"| metric | {MODEL} (every user, 95% interval) | {MODEL} per fold (mean +- std) | "
        f"{BASELINE} | {ANCHOR} (bag of watched items) | target |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for m in metrics:
        mean, std = spread.get(m, (float("nan"), float("nan")))
        target = TARGETS.get(m)
        lines.append(
            f"| {m} | {_cell(figures[MODEL][m])} | {mean:.3f} +- {std:.3f} | "
            f"{_cell(figures[BASELINE].get(m))} | {_cell(figures[ANCHOR].get(m))} | "
            f"{'' if target is None else f'{target:.2f}'} |"
        )
    lines += [
        "",
        "| fold | holdout users | epochs (best) | seconds |",
        "|---:|---:|---:|---:|",
        *(
            f"| {f['fold']} | {f['n_holdout']} | {f['epochs']} ({f['best_epoch']}) | "
            f"{f['seconds']:.0f} |"
            for f in folds
        ),
        "",
        "Baseline: popularity (click, ranking), the item's smoothed like rate (like), the "
        "majority class (profile); on cold items the content popularity ridge. ECE: top-label "
        "expected calibration error, 15 bins. `crossval.png`: the intervals, and the profile "
        "heads' reliability diagrams.",
        "",
    ]
    return "\n".join(lines)


def _plot(path: Path, results: dict[str, Any]) -> None:
    figures = results["figures"]
    shown = [m for m in dict.fromkeys(HEADLINE) if m in figures[MODEL]]
    calibration = results["calibration"]
    tasks = list(calibration[MODEL])
    n_cols = max(len(shown), len(tasks))
    fig, axes = plt.subplots(2, n_cols, figsize=(2.4 * n_cols, 6.5), squeeze=False)
    who = (MODEL, ANCHOR, BASELINE)
    for ax, m in zip(axes[0], shown, strict=False):
        _intervals(ax, m, [(w, figures[w].get(m)) for w in who], TARGETS.get(m))
    for ax, task in zip(axes[1], tasks, strict=False):
        _reliability(ax, task, {w: calibration[w][task] for w in (MODEL, ANCHOR)})
    for ax in [*axes[0][len(shown) :], *axes[1][len(tasks) :]]:
        ax.axis("off")
    fig.suptitle(f"{len(results['folds'])}-fold cross-validation, {results['n_users']} users")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _intervals(
    ax: Any, metric: str, figures: Sequence[tuple[str, dict[str, float] | None]], target: Any
) -> None:
    for i, (name, f) in enumerate(figures):
        if f is None:
            continue
        ax.errorbar(
            [i],
            [f["value"]],
            yerr=[[f["value"] - f["low"]], [f["high"] - f["value"]]],
            fmt="o",
            capsize=4,
            color=COLOURS[name],
            label=name,
        )
    if target is not None:
        ax.axhline(target, color="grey", linestyle="--", linewidth=1, label="target")
    ax.set_xticks(range(len(figures)), [n.split()[0] for n, _ in figures], fontsize=7)
    ax.set_title(metric, fontsize=9)


def _reliability(ax: Any, task: str, curves: dict[str, dict[str, list[float]]]) -> None:
    ax.plot([0, 1], [0, 1], color="grey", linewidth=1, linestyle="--")
    for name, curve in curves.items():
        ax.plot(
            curve["confidence"],
            curve["accuracy"],
            marker="o",
            markersize=3,
            color=COLOURS[name],
            label=name,
        )
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_xlabel("confidence", fontsize=8)
    ax.set_ylabel("accuracy", fontsize=8)
    ax.set_title(f"{task}: reliability", fontsize=9)
    ax.legend(fontsize=7)
