"""The refit study's report (training.studies.refit_study): a table of each model's figure on
the next
interactions with the paired difference and its interval, the training times, and a plot."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only, no display
import matplotlib.pyplot as plt  # noqa: E402

from training.studies.refit_study import DIFFERENCE, MODELS  # noqa: E402


def write(folder: Path, stem: str, results: dict[str, Any], command: str) -> Path:
    """reports/<stem>.{md,json,png}; the markdown's path."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{stem}.json").write_text(
        json.dumps(results | {"command": command}, indent=2) + "\n", encoding="utf-8"
    )
    path = folder / f"{stem}.md"
    path.write_text(_markdown(results, command, f"{stem}.png"), encoding="utf-8")
    _plot(results, folder / f"{stem}.png")
    return path


def _cell(figure: dict[str, float], signed: bool = False) -> str:
    form = "{:+.3f}" if signed else "{:.3f}"
    value, low, high = (form.format(figure[key]) for key in ("value", "low", "high"))
    return f"{value} [{low}, {high}]"


def _markdown(results: dict[str, Any], command: str, plot: str) -> str:
    k, seconds, fit = results["k"], results["seconds"], results["fit"]
    lines = [
        f"# The refit against the held-out model: {results['config']}",
        "",
        f"`{command}`",
        "",
        f"{results['users']} users, {results['events']:,} kept-aside interactions (each user's "
        f"last tenth); the next item among {results['n_negatives']} untouched items, ranked "
        "by the click probability (the protocol's ranking) and by the served score (the "
        "default ranking weights); figures through `/predict`, 95% intervals from "
        f"{results['resamples']} paired resamples of the users.",
        "",
        f"| metric | {' | '.join(MODELS)} | {DIFFERENCE} |",
        "|---|---:|---:|---:|",
    ]
    for metric, row in results["figures"].items():
        name = metric.replace("@k", f"@{k}")
        cells = [_cell(row[m]) for m in MODELS] + [_cell(row[DIFFERENCE], signed=True)]
        lines.append(f"| {name} | {' | '.join(cells)} |")
    lines += [
        "",
        f"Training on 2 cores: the evaluated run {seconds['evaluated']:.0f} s "
        f"({results['evaluated_epochs']} epochs with validation, best {fit['epochs']}), the "
        f"refit {seconds['refit']:.0f} s ({fit['epochs']} epochs on {fit['events']:,} events, "
        f"{fit['users']:,} users, {fit['items']:,} items).",
        "",
        f"![the refit against the held-out model]({plot})",
        "",
    ]
    return "\n".join(lines)


def _plot(results: dict[str, Any], path: Path) -> None:
    figures = results["figures"]
    fig, axes = plt.subplots(1, len(figures), figsize=(2.9 * len(figures), 3.4))
    for ax, (metric, row) in zip(axes, figures.items(), strict=True):
        for x, model in enumerate(MODELS):
            f = row[model]
            ax.errorbar(
                x,
                f["value"],
                yerr=[[f["value"] - f["low"]], [f["high"] - f["value"]]],
                fmt="o",
                capsize=4,
            )
        ax.set_xticks(range(len(MODELS)), MODELS)
        ax.set_xlim(-0.5, len(MODELS) - 0.5)
        d = row[DIFFERENCE]
        ax.set_title(
            f"{metric.replace('@k', '@' + str(results['k']))}\n"
            f"{DIFFERENCE} {d['value']:+.3f} [{d['low']:+.3f}, {d['high']:+.3f}]",
            fontsize=9,
        )
    fig.suptitle(f"next interactions through /predict ({results['config']})", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
