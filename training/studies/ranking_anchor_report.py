"""The artifact against SASRec as a report: a table of every figure with its interval, the
paired difference with its verdict, SASRec's runs, and an interval plot (sasrec.md, .png;
sasrec-ce.* for the softmax-trained SASRec)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from training.evaluation.bootstrap import Interval  # noqa: E402
from training.studies.ranking_anchor import ANCHOR, DIFFERENCE, MODEL, stem, verdict  # noqa: E402


def save(results: dict[str, Any], folder: Path, command: str) -> Path:
    """<stem>.json, .md and .png in `folder` (stem: by SASRec's loss); returns the markdown
    path."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{stem(results['sasrec']['loss'])}.json").write_text(
        json.dumps(results | {"command": command}, indent=2) + "\n", encoding="utf-8"
    )
    return write(results, folder, command)


def metric_names(results: dict[str, Any]) -> list[str]:
    """The metrics compared, in the order the protocol lists them."""
    return [key.split("/", 1)[1] for key in results["figures"] if key.startswith(f"{MODEL}/")]


def _cell(figure: dict[str, float]) -> str:
    return f"{figure['value']:.4f} [{figure['low']:.4f}, {figure['high']:.4f}]"


def _difference(figure: dict[str, float]) -> str:
    """A paired difference's cell: value, interval, verdict."""
    d = Interval(**figure)
    return f"**{d.value:+.4f}** [{d.low:+.4f}, {d.high:+.4f}] {verdict(d)}"


def _header(metrics: list[str]) -> list[str]:
    """A markdown table's header: a blank corner, then one right-aligned column per metric."""
    return ["| | " + " | ".join(metrics) + " |", "|---|" + "---:|" * len(metrics)]


def write(results: dict[str, Any], folder: Path, command: str) -> Path:
    """<stem>.md and <stem>.png in `folder`; returns the markdown path."""
    figures, metrics = results["figures"], metric_names(results)
    seeds = [f"{ANCHOR} {run['seed']}" for run in results["seeds"]]
    rows = [MODEL, *seeds, f"{ANCHOR}"]
    labels = {MODEL: f"artifact `{results['artifact']}`", ANCHOR: f"{ANCHOR}, mean of the seeds"}
    lines = [
        "# The model against SASRec on the same test events",
        "",
        f"Command: `{command}`. Data: `{results['data']}`, {results['users']} users; 95%",
        "percentile bootstrap over users; the difference is resampled paired (the same users",
        "for both), so its interval is the one to read.",
        "",
        *_header(metrics),
    ]
    for row in rows:
        cells = [_cell(figures[f"{row}/{m}"]) for m in metrics]
        lines.append(f"| {labels.get(row, row)} | " + " | ".join(cells) + " |")
    differences = [_difference(figures[f"{DIFFERENCE}/{m}"]) for m in metrics]
    lines.append(f"| **{DIFFERENCE}** (paired) | " + " | ".join(differences) + " |")
    lines += [
        "",
        "## SASRec's runs",
        "",
        "Settings: " + ", ".join(f"{k} {v}" for k, v in results["sasrec"].items() if k != "seed"),
        "",
        "| seed | kept epoch (best validation NDCG) | epochs run | training s |",
        "|---:|---:|---:|---:|",
    ]
    for run in results["seeds"]:
        lines.append(
            f"| {run['seed']} | {run['kept_epoch']} | {run['checks'][-1]['epoch']} "
            f"| {run['seconds']:.0f} |"
        )
    name = stem(results["sasrec"]["loss"])
    lines += ["", f"![the model against SASRec]({name}.png)", ""]
    if "full_catalogue" in results:
        lines += ["", *full_catalogue_lines(results["full_catalogue"]), ""]
    _plot(figures, metrics, rows, labels, folder / f"{name}.png")
    path = folder / f"{name}.md"
    path.write_text("\n".join(lines), encoding="utf-8")
    return path


def full_catalogue_lines(full: dict[str, Any]) -> list[str]:
    """The full-catalogue section: each row's figures, then the paired differences."""
    figures, metrics = full["figures"], full["metrics"]
    lines = [
        "## Over the full catalogue",
        "",
        f"Each of the {full['users']} users' first test item ranked among every item the user",
        "never touched; SASRec by its logits over every item. 95% bootstrap intervals over",
        "users, every row resampled with the same users.",
        "",
        *_header(metrics),
    ]
    for row in full["rows"]:
        label = f"{ANCHOR}, mean of the seeds" if row == ANCHOR else row
        cells = [_cell(figures[f"{row}/{m}"]) for m in metrics]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    for row in full["differences"]:
        cells = [_difference(figures[f"{row}/{m}"]) for m in metrics]
        lines.append(f"| **{row}** (paired) | " + " | ".join(cells) + " |")
    return lines


def _plot(
    figures: dict[str, dict[str, float]],
    metrics: list[str],
    rows: list[str],
    labels: dict[str, str],
    path: Path,
) -> None:
    """One panel per metric: each row's value with its interval, the difference beside."""
    fig, axes = plt.subplots(1, len(metrics) + 1, figsize=(4 * (len(metrics) + 1), 3.2))
    panels = [
        *(
            (ax, [(f"{row}/{metric}", "C0" if row == MODEL else "C1") for row in rows], metric)
            for ax, metric in zip(axes, metrics, strict=False)
        ),
        (axes[-1], [(f"{DIFFERENCE}/{m}", "C2") for m in metrics], f"{DIFFERENCE} (paired)"),
    ]
    for ax, points, title in panels:
        for y, (key, color) in enumerate(points):
            f = figures[key]
            xerr = [[f["value"] - f["low"]], [f["high"] - f["value"]]]
            ax.errorbar(f["value"], y, xerr=xerr, fmt="o", color=color, capsize=3)
        ax.invert_yaxis()
        ax.set_title(title)
    for ax in axes[:-1]:
        ax.set_yticks(range(len(rows)), [labels.get(r, r).split(" `")[0] for r in rows])
    axes[-1].set_yticks(range(len(metrics)), metrics)
    axes[-1].axvline(0.0, color="grey", linewidth=1)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
