"""`python -m bench.parity` (in `make bench-train`): do 2 ranks learn what 1 process learns?

The planted synthetic log of harness/training.py (LEARNING), trained with 3 seeds
(`optim.seed`) three ways: one process in memory, one process streaming the prepared folder, two
ranks (torchrun, gloo) streaming it. Every run's artifact goes through the service's own loader
(hashes, schema, parity with torch). Test figures as mean +- sample std over the seeds, written
to bench/parity.md.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from harness.training import LEARNING, TORCHRUN, training_cli
from service.repository import load_artifact

HERE = Path(__file__).parent
RESULTS = HERE / "parity.md"
METRICS = ("click_auc", "like_auc", "hr@10", "gender_auc", "age_accuracy")
WAYS = {
    "1 process, in memory": (1, "synthetic"),
    "1 process, prepared shards": (1, "prep"),
    "2 ranks, prepared shards": (2, "prep"),
}


def train(cwd: Path, ranks: int, data: str, seed: int) -> dict[str, float]:
    launcher = (
        [str(TORCHRUN), "--standalone", f"--nproc_per_node={ranks}"]
        if ranks > 1
        else [sys.executable]
    )
    done = subprocess.run(
        [
            *launcher,
            "-m",
            "training",
            "train",
            "--data",
            data,
            "--quiet",
            "--no-refit",  # the held-out figures of 1 and 2 ranks are compared
            *LEARNING,
            f"--optim.seed={seed}",
        ],
        cwd=cwd,
        capture_output=True,
        text=True,
        env=os.environ | {"OMP_NUM_THREADS": "1"},
    )
    if done.returncode:
        raise SystemExit(done.stderr[-3000:])
    load_artifact(cwd / "models", "synthetic")  # the contract checks the service runs
    versions = sorted(
        int(p.name) for p in (cwd / "reports/synthetic").iterdir() if p.name.isdigit()
    )
    report = json.loads((cwd / f"reports/synthetic/{versions[-1]}/report.json").read_text())
    metrics: dict[str, float] = report["metrics"]
    return metrics


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seeds", type=int, default=3)
    args = parser.parse_args()
    results: dict[str, list[dict[str, float]]] = {way: [] for way in WAYS}
    with tempfile.TemporaryDirectory() as scratch:
        work = Path(scratch)
        prepared = training_cli(
            "prepare",
            "--data",
            "synthetic",
            "--out",
            str(work / "prep"),
            "--quiet",
            "--no-refit",
            "--shard-events=3000",
            *LEARNING,
        )
        if prepared.returncode:
            raise SystemExit(prepared.stderr[-3000:])
        for way, (ranks, data) in WAYS.items():
            folder = work / way.replace(" ", "-").replace(",", "")
            folder.mkdir()
            for seed in range(args.seeds):
                source = str(work / "prep") if data == "prep" else data
                results[way].append(train(folder, ranks, source, seed))
                sys.stdout.write(f"{way}, seed {seed}: {results[way][-1]['click_auc']:.4f}\n")
    header = "| way | " + " | ".join(METRICS) + " |"
    lines = [header, "|---|" + "---:|" * len(METRICS)]
    for way, runs in results.items():
        cells = []
        for m in METRICS:
            values = [r[m] for r in runs]
            spread = statistics.stdev(values) if len(values) > 1 else 0.0
            cells.append(f"{statistics.mean(values):.3f} +- {spread:.3f}")
        lines.append(f"| {way} | " + " | ".join(cells) + " |")
    text = "\n".join(
        [
            "# Quality parity: 2 ranks against 1 process",
            "",
            f"`python -m bench.parity --seeds={args.seeds}` on {os.cpu_count()} cores: the "
            "planted synthetic log of harness/training.py (500 users, 200 items, "
            "4 epochs), seeds 0.. of `optim.seed`; test figures, mean +- sample std over the "
            "seeds. Every artifact passed the service's loader (hashes, schema, ONNX parity).",
            "",
            *lines,
            "",
        ]
    )
    RESULTS.write_text(text, encoding="utf-8")
    sys.stdout.write(text)


if __name__ == "__main__":
    main()
