"""The training report: JSON (everything), a markdown table (model vs baseline) and a PNG of the
training curves per task."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only, no display
import matplotlib.pyplot as plt  # noqa: E402

from training.fit.train import History  # noqa: E402


def write_report(
    folder: Path,
    title: str,
    metrics: dict[str, float],
    baselines: dict[str, float],
    history: History,
    extra: dict[str, object],
) -> dict[str, Path]:
    """Write report.json, report.md and curves.png into `folder`; return their paths."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = {
        "json": folder / "report.json",
        "md": folder / "report.md",
        "png": folder / "curves.png",
    }
    paths["json"].write_text(
        json.dumps(
            _finite_or_null(
                {
                    "title": title,
                    "metrics": metrics,
                    "baselines": baselines,
                    "best_epoch": history.best_epoch,
                    "epochs": history.epochs,
                    **extra,
                }
            ),
            indent=2,
            allow_nan=False,
        )
        + "\n",
        encoding="utf-8",
    )
    paths["md"].write_text(
        markdown_table(f"{title}: test split", metrics, baselines), encoding="utf-8"
    )
    plot_curves(history, paths["png"], f"{title}: training curves")
    return paths


def _finite_or_null(value: Any) -> Any:
    """The same structure with NaN and infinities as None: an undefined figure (e.g. the AUC of
    a single class) is JSON null, and the file stays valid JSON."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite_or_null(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite_or_null(v) for v in value]
    return value


def markdown_table(title: str, metrics: dict[str, float], baselines: dict[str, float]) -> str:
    """| metric | model | baseline | table of the test figures."""
    rows = [f"| {k} | {v:.4f} | {baselines.get(k, float('nan')):.4f} |" for k, v in metrics.items()]
    return "\n".join(
        [f"### {title}", "", "| metric | hydrarec | baseline |", "|---|---:|---:|", *rows, ""]
    )


def plot_curves(history: History, path: Path, title: str) -> None:
    """One panel per task: train and validation loss by epoch, best epoch marked; a last panel
    with each task's loss weight at the end of every epoch (flat unless the weighting learns)."""
    tasks = dict.fromkeys(
        k.removeprefix("train_loss_")
        for e in history.epochs
        for k in e
        if k.startswith("train_loss_")
    )  # task order, not alphabetical
    panels = ["total", *tasks, "weights"]
    n_cols = min(3, len(panels))
    n_rows = -(-len(panels) // n_cols)
    fig, axes = plt.subplots(n_rows, n_cols, figsize=(4 * n_cols, 3 * n_rows), squeeze=False)
    epochs = range(1, len(history.epochs) + 1)
    for ax, task in zip(axes.flat, panels, strict=False):
        if task == "weights":
            for name in tasks:
                values = [e.get(f"weight_{name}", float("nan")) for e in history.epochs]
                ax.plot(epochs, values, "-o", label=name, markersize=3)
            ax.set_yscale("log")
            ax.set_title("loss weights")
            ax.set_xlabel("epoch")
            ax.legend(fontsize="small")
            continue
        suffix = "" if task == "total" else f"_{task}"
        for part, style in (("train", "-o"), ("val", "--s")):
            ax.plot(
                epochs,
                [e.get(f"{part}_loss{suffix}", float("nan")) for e in history.epochs],
                style,
                label=part,
                markersize=3,
            )
        ax.axvline(history.best_epoch, color="grey", linewidth=0.8, linestyle=":")
        ax.set_title(f"{task} loss")
        ax.set_xlabel("epoch")
    for ax in axes.flat[len(panels) :]:
        ax.set_visible(False)
    axes[0][0].legend(title=f"best epoch {history.best_epoch}")
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
