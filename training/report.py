"""The training report: JSON (everything), a markdown table (model vs baseline) and a PNG of the
training curves per task."""

from __future__ import annotations

import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only, no display
import matplotlib.pyplot as plt  # noqa: E402

from training.train import History  # noqa: E402


def write_report(folder: Path, title: str, metrics: dict[str, float],
                 baselines: dict[str, float], history: History,
                 extra: dict[str, object]) -> dict[str, Path]:
    """Write report.json, report.md and curves.png into `folder`; return their paths."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = {"json": folder / "report.json", "md": folder / "report.md",
             "png": folder / "curves.png"}
    paths["json"].write_text(json.dumps(
        {"title": title, "metrics": metrics, "baselines": baselines,
         "best_epoch": history.best_epoch, "epochs": history.epochs, **extra},
        indent=2, sort_keys=False) + "\n", encoding="utf-8")
    paths["md"].write_text(markdown_table(title, metrics, baselines), encoding="utf-8")
    plot_curves(history, paths["png"], title)
    return paths


def markdown_table(title: str, metrics: dict[str, float], baselines: dict[str, float]) -> str:
    """| metric | model | baseline | table of the test figures."""
    rows = [f"| {k} | {v:.4f} | {baselines.get(k, float('nan')):.4f} |"
            for k, v in metrics.items()]
    return "\n".join([f"### {title}", "", "| metric | hydrarec | baseline |", "|---|---:|---:|",
                      *rows, ""])


def plot_curves(history: History, path: Path, title: str) -> None:
    """One panel per task: train and validation loss by epoch, best epoch marked."""
    tasks = sorted({k.removeprefix("train_loss_") for e in history.epochs for k in e
                    if k.startswith("train_loss_")})
    panels = ["total", *tasks]
    fig, axes = plt.subplots(1, len(panels), figsize=(3.2 * len(panels), 3), squeeze=False)
    epochs = range(1, len(history.epochs) + 1)
    for ax, task in zip(axes[0], panels, strict=True):
        suffix = "" if task == "total" else f"_{task}"
        for part, style in (("train", "-o"), ("val", "--s")):
            ax.plot(epochs, [e.get(f"{part}_loss{suffix}", float("nan"))
                             for e in history.epochs], style, label=part, markersize=3)
        ax.axvline(history.best_epoch, color="grey", linewidth=0.8, linestyle=":")
        ax.set_title(task)
        ax.set_xlabel("epoch")
    axes[0][0].set_ylabel("loss")
    axes[0][0].legend()
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
