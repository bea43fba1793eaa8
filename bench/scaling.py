"""`python -m bench.scaling` (`make bench-train`): prepare and train at 1M and 10M interactions.

For each size: `synthesize` a log (users = interactions / 10, items = interactions / 100; kept
in bench/.data for the next run), `prepare` it under DuckDB's 4 GB memory limit, then train
`--batches` batches of one epoch from the prepared folder with 1 and 2 ranks (torchrun, gloo).
Figures: wall time, samples/s and every process's peak RSS (ru_maxrss, read by bench/rss.py in
each rank), the embedding tables' share given apart (weights, gradients and Adam's two moments:
4 x rows x d x 4 bytes). Written to bench/training.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from training.config import load_config

HERE = Path(__file__).parent
RESULTS = HERE / "training.md"  # the figures; this module is not named training: bench/rss.py runs from bench/
CONFIG = HERE / "training.toml"
DATA = HERE / ".data"
TORCHRUN = Path(sys.executable).with_name("torchrun")


def run(command: list[str], rss_file: Path) -> tuple[float, list[dict[str, float]]]:
    """(wall seconds, one peak-RSS record per process) of a training command run under rss.py."""
    rss_file.unlink(missing_ok=True)
    start = time.perf_counter()
    done = subprocess.run(
        command,
        env=os.environ | {"HYDRAREC_RSS_FILE": str(rss_file), "OMP_NUM_THREADS": "1"},
        capture_output=True,
        text=True,
    )
    wall = time.perf_counter() - start
    if done.returncode:
        raise SystemExit(f"failed: {' '.join(command)}\n{done.stderr[-3000:]}")
    records = [json.loads(line) for line in rss_file.read_text().splitlines()]
    return wall, sorted(records, key=lambda r: r["rank"])


def synthesized(n: int) -> Path:
    folder = DATA / f"synth-{n}"
    if not (folder / "items").is_dir():
        subprocess.run(
            [
                sys.executable,
                "-m",
                "training",
                "synthesize",
                "--users",
                str(n // 10),
                "--items",
                str(n // 100),
                "--interactions",
                str(n),
                "--out",
                str(folder),
                "--quiet",
            ],
            check=True,
        )
    return folder


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sizes", default="1000000,10000000", help="interactions, comma-separated")
    parser.add_argument("--ranks", default="1,2", help="rank counts, comma-separated")
    parser.add_argument("--batches", type=int, default=200, help="training batches per run")
    args = parser.parse_args()
    cfg = load_config(CONFIG)
    rows: list[str] = []
    with tempfile.TemporaryDirectory() as scratch:
        work = Path(scratch)
        for n in (int(s) for s in args.sizes.split(",")):
            data, prep = synthesized(n), DATA / f"prep-{n}"
            wall, rss = run(
                [
                    sys.executable,
                    str(HERE / "rss.py"),
                    "prepare",
                    "--data",
                    str(data),
                    "--out",
                    str(prep),
                    "--config",
                    str(CONFIG),
                    "--name",
                    "bench",
                    "--memory-limit",
                    "4GB",
                    "--quiet",
                ],
                work / "rss.jsonl",
            )
            manifest = json.loads((prep / "prepared.json").read_text())
            tables = 4 * (manifest["n_users"] + manifest["n_items"]) * cfg.network.d_embedding * 4
            rows.append(
                f"| prepare | {n:,} | 1 | {wall:.0f} s | {manifest['interactions'] / wall:,.0f} "
                f"interactions/s | {rss[0]['peak_rss_mib']:,.0f} | - |"
            )
            sys.stdout.write(rows[-1] + "\n")
            for ranks in (int(r) for r in args.ranks.split(",")):
                launcher = (
                    [str(TORCHRUN), "--standalone", f"--nproc_per_node={ranks}"]
                    if ranks > 1
                    else [sys.executable]
                )
                out = work / f"run-{n}-{ranks}"
                wall, rss = run(
                    [
                        *launcher,
                        str(HERE / "rss.py"),
                        "train",
                        "--data",
                        str(prep),
                        "--config",
                        str(CONFIG),
                        "--out",
                        str(out / "models"),
                        "--reports",
                        str(out / "reports"),
                        "--optim.epochs=1",
                        f"--optim.max_batches={args.batches}",
                        "--quiet",
                    ],
                    work / "rss.jsonl",
                )
                report = json.loads((out / "reports/bench/1/report.json").read_text())
                speed = report["epochs"][0]["samples_per_s"]
                peaks = " / ".join(f"{r['peak_rss_mib']:,.0f}" for r in rss)
                rows.append(
                    f"| train | {n:,} | {ranks} | {wall:.0f} s | {speed:,.0f} samples/s | "
                    f"{peaks} | {tables / 2**20:,.0f} |"
                )
                sys.stdout.write(rows[-1] + "\n")
    write(rows, args)


def write(rows: list[str], args: argparse.Namespace) -> None:
    command = "python -m bench.scaling " + " ".join(
        f"--{k}={v}" for k, v in sorted(vars(args).items())
    )
    text = "\n".join(
        [
            "# Training at scale: prepare and train from Parquet shards",
            "",
            f"`{command}` (`make bench-train`) on {os.cpu_count()} cores, "
            f"{platform.processor() or platform.machine()}, Python {platform.python_version()}. "
            "Synthetic logs (`python -m training synthesize`, users = interactions / 10, "
            "items = interactions / 100), the config bench/training.toml (L = 50, d = 32, "
            "evaluation on 5,000 users). prepare runs under DuckDB's 4 GB memory limit. "
            "Each train run is one epoch cut to the first batches, then the evaluation and "
            "the export, all inside the wall time; samples/s counts the training batches "
            "alone (every rank's events together). Peak RSS is ru_maxrss of each process "
            "(rank 0 / rank 1); the embedding tables' part of it is given apart: weights, "
            "gradients and Adam's two moments of the user and item tables.",
            "",
            "| step | interactions | ranks | wall | speed | peak RSS MiB | embedding tables MiB |",
            "|---|---:|---:|---:|---:|---:|---:|",
            *rows,
            "",
        ]
    )
    RESULTS.write_text(text, encoding="utf-8")
    sys.stdout.write(f"written to {RESULTS}\n")


if __name__ == "__main__":
    main()
