"""The relatedness study as a report: relatedness.md (tables and the verdicts in words),
relatedness.png (gates, gradient cosines per epoch, leave-one-task-out) and relatedness.json."""

from __future__ import annotations

import dataclasses
import json
import statistics
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only, no display
import matplotlib.pyplot as plt  # noqa: E402

from training.studies.experiment import BLOCKS  # noqa: E402
from training.studies.relatedness import Study  # noqa: E402

STEM = "relatedness"
AGREE = 0.1  # |mean gradient cosine| above this: the tasks agree (or conflict); below: unrelated


def overlap(a: list[float], b: list[float]) -> float:
    """How much two gates mix the same experts: the sum of the smaller weight of each expert
    (1: the same mixture; 0: disjoint experts)."""
    return sum(min(x, y) for x, y in zip(a, b, strict=True))


def mean_cosine(per_epoch: list[float]) -> float:
    return statistics.fmean(per_epoch) if per_epoch else float("nan")


def verdict(gain: float, spread: float) -> str:
    """The experiment grid's rule: a change within the two seed spreads is a tie."""
    if abs(gain) <= spread:
        return "tie"
    return "helps" if gain > 0 else "hurts"


def gate_tables(study: Study) -> list[str]:
    if not study.gates:
        return [f"The artifact's block ({study.block}) has no gates: every task reads the same "
                "shared bottom.", ""]  # fmt: skip
    lines = []
    for level, experts in study.experts.items():
        lines += [f"**{level}**, mean gate weight over the split's test events:", ""]
        lines += ["| task | " + " | ".join(experts) + " |", "|---|" + "---:|" * len(experts)]
        for task, levels in study.gates.items():
            if level in levels:
                lines.append(f"| {task} | " + " | ".join(f"{w:.3f}" for w in levels[level]) + " |")
        lines.append("")
    top = list(study.experts)[-1]
    tasks = [t for t in study.tasks if top in study.gates.get(t, {})]
    lines += [f"Overlap of two tasks' gates at {top} (sum over experts of the smaller weight; "
              "1 = the same mixture):", ""]  # fmt: skip
    lines += ["| | " + " | ".join(tasks) + " |", "|---|" + "---:|" * len(tasks)]
    for a in tasks:
        cells = [f"{overlap(study.gates[a][top], study.gates[b][top]):.2f}" for b in tasks]
        lines.append(f"| {a} | " + " | ".join(cells) + " |")
    return [*lines, ""]


def cosine_table(study: Study) -> list[str]:
    pairs = sorted({p for per in study.cosines.values() for p in per})
    lines = ["| tasks | " + " | ".join(BLOCKS.values()) + " |", "|---|" + "---:|" * len(BLOCKS)]
    for pair in pairs:
        cells = [f"{mean_cosine(study.cosines[b].get(pair, [])):+.3f}" for b in BLOCKS]
        lines.append(f"| {pair.replace('/', ' & ')} | " + " | ".join(cells) + " |")
    return [*lines, ""]


def effect_table(study: Study) -> list[str]:
    lines = ["| measured (figure) | " + " | ".join(f"without {t}" for t in study.tasks) + " |"]
    lines.append("|---|" + "---:|" * len(study.tasks))
    for measured, row in study.effects.items():
        cells = [
            "" if d == measured else f"{row[d][0]:+.4f} ± {row[d][1]:.4f} {verdict(*row[d])}"
            for d in study.tasks
        ]
        lines.append(f"| {measured} ({study.headline[measured]}) | " + " | ".join(cells) + " |")
    return [*lines, ""]


def in_words(study: Study) -> list[str]:
    """One line per task: who helps it and who hurts it; then which gradients agree."""
    lines = []
    for measured, row in study.effects.items():
        helps = [d for d, (g, s) in row.items() if verdict(g, s) == "helps"]
        hurts = [d for d, (g, s) in row.items() if verdict(g, s) == "hurts"]
        said = [f"helped by {', '.join(helps)}" if helps else "helped by none of the others"]
        said += [f"hurt by {', '.join(hurts)}"] if hurts else []
        lines.append(f"- {measured}: {'; '.join(said)} (leaving each out, {study.block}).")
    own = study.cosines.get(study.block, {})
    agree = [p for p, c in own.items() if mean_cosine(c) > AGREE]
    conflict = [p for p, c in own.items() if mean_cosine(c) < -AGREE]
    lines.append(
        f"- Gradients on the shared parameters ({study.block}): "
        f"agree for {', '.join(p.replace('/', ' & ') for p in agree) or 'no pair'}; "
        f"conflict for {', '.join(p.replace('/', ' & ') for p in conflict) or 'no pair'}; "
        f"the rest are near orthogonal (|cosine| <= {AGREE})."
    )
    return lines


def plot(study: Study, path: Path) -> None:
    """Gates (heatmap), gradient cosines per epoch (the artifact's block), leave-one-task-out
    (heatmap of the gain over its spread)."""
    fig, axes = plt.subplots(1, 3, figsize=(18, 5))
    if study.gates:
        top = list(study.experts)[-1]
        tasks = [t for t in study.tasks if top in study.gates.get(t, {})]
        image = axes[0].imshow([study.gates[t][top] for t in tasks], cmap="viridis", vmin=0)
        axes[0].set_xticks(range(len(study.experts[top])), study.experts[top], rotation=45)
        axes[0].set_yticks(range(len(tasks)), tasks)
        fig.colorbar(image, ax=axes[0])
    axes[0].set_title(f"mean gate weight ({study.block})")
    for pair, per_epoch in study.cosines.get(study.block, {}).items():
        axes[1].plot(range(1, len(per_epoch) + 1), per_epoch, "-o", markersize=3, label=pair)
    axes[1].axhline(0, color="grey", linewidth=0.8)
    axes[1].set(
        xlabel="epoch", ylabel="gradient cosine", title=f"shared parameters ({study.block})"
    )
    axes[1].legend(fontsize="x-small", ncol=2)
    ratio = [
        [0.0 if d == m else row[d][0] / max(row[d][1], 1e-9) for d in study.tasks]
        for m, row in study.effects.items()
    ]
    bound = max(2.0, max(abs(v) for r in ratio for v in r))
    image = axes[2].imshow(ratio, cmap="RdBu", vmin=-bound, vmax=bound)
    axes[2].set_xticks(
        range(len(study.tasks)), [f"without {t}" for t in study.tasks], rotation=30, ha="right"
    )
    axes[2].set_yticks(range(len(study.effects)), list(study.effects))
    axes[2].set_title("leave one task out: gain / seed spread (> 1 helps)")
    fig.colorbar(image, ax=axes[2])
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def save(study: Study, folder: Path, command: str) -> Path:
    """Write the three files; the markdown's path."""
    folder.mkdir(parents=True, exist_ok=True)
    seeds = sorted({r["seed"] for r in study.runs})
    lines = [
        "# What the tasks share",
        "",
        f"Command: `{command}` ({len(study.runs)} runs, seeds {seeds}, on the config and split "
        f"of `{study.model}`, whose block is {study.block}).",
        "",
        "## In words",
        "",
        *in_words(study),
        "",
        "## Which experts each task reads",
        "",
        *gate_tables(study),
        "## Do the tasks' gradients agree?",
        "",
        "Cosine of two task losses' gradients on the shared parameters (the history encoder, the "
        "block's shared experts), probed on a few batches per epoch, mean over epochs and seeds "
        "(> 0: they ask for the same change):",
        "",
        *cosine_table(study),
        f"## Leaving one task out ({study.block})",
        "",
        "Each task's figure with every task, minus without the dropped one (> 0: the dropped "
        "task helps), ± the two seed spreads; within them a tie:",
        "",
        *effect_table(study),
        f"![gates, gradient cosines, leave-one-task-out]({STEM}.png)",
    ]
    md = folder / f"{STEM}.md"
    md.write_text("\n".join(lines) + "\n", encoding="utf-8")
    plot(study, folder / f"{STEM}.png")
    raw = dataclasses.asdict(study) | {"command": command}
    (folder / f"{STEM}.json").write_text(json.dumps(raw, indent=2) + "\n", encoding="utf-8")
    return md
