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

from training.config_file import load_config

HERE = Path(__file__).parent
RESULTS = (
    HERE / "training.md"
)  # the figures; this module is not named training: bench/rss.py runs from bench/
CONFIG = HERE / "training.toml"
DATA = HERE / ".data"
TORCHRUN = Path(sys.executable).with_name("torchrun")
# (ranks, extra flags) of the train runs per size: 1 and 2 ranks as configured; 1 rank without
# the user-id table (the memory that is not an embedding table); 2 ranks with batches 8x larger
# (the tables' per-step cost spread over more events)
VARIANTS = (
    (1, ()),
    (2, ()),
    (1, ("--network.user_embedding=false",)),
    (2, ("--optim.batch_size=2048",)),
)


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
                    "--no-refit",  # the figures of the training path at scale, as before the refit
                    "--quiet",
                ],
                work / "rss.jsonl",
            )
            manifest = json.loads((prep / "prepared.json").read_text())
            users_table, items_table = (
                rows_ * cfg.network.d_embedding * 4
                for rows_ in (manifest["n_users"], manifest["n_items"])
            )
            rows.append(
                f"| prepare | {n:,} | 1 | --memory-limit 4GB | {wall:.0f} s | "
                f"{manifest['interactions'] / wall:,.0f} interactions/s | - | "
                f"{rss[0]['peak_rss_mib']:,.0f} | - |"
            )
            sys.stdout.write(rows[-1] + "\n")
            for ranks, flags in VARIANTS:
                launcher = (
                    [str(TORCHRUN), "--standalone", f"--nproc_per_node={ranks}"]
                    if ranks > 1
                    else [sys.executable]
                )
                out = work / f"run-{n}-{ranks}-{len(rows)}"
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
                        "--no-refit",
                        "--quiet",
                        *flags,
                    ],
                    work / "rss.jsonl",
                )
                report = json.loads((out / "reports/bench/1/report.json").read_text())
                speed = report["epochs"][0]["samples_per_s"]
                # rank 0's peak when training ended (its report), every other rank's whole run
                training = [report["peak_rss_mib_training"]]
                training += [r["peak_rss_mib"] for r in rss[1:]]
                table = 0 if "--network.user_embedding=false" in flags else users_table
                rows.append(
                    f"| train | {n:,} | {ranks} | {' '.join(flags) or 'bench/training.toml'} | "
                    f"{wall:.0f} s | {speed:,.0f} samples/s | "
                    f"{' / '.join(f'{v:,.0f}' for v in training)} | "
                    f"{rss[0]['peak_rss_mib']:,.0f} | {(table + items_table) / 2**20:,.0f} |"
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
            "(rank 0 / rank 1): while training (rank 0's when its training ended, before the "
            "evaluation and the export; rank 1's whole run) and for rank 0's whole run. The id "
            "tables' weights are given apart (users + items x d x 4 bytes); training holds "
            "each table several times over (gradients, Adam's two moments, the best epoch's "
            "copy, DDP's gradient buckets). The run without the user-id table shows the memory "
            "that is not a table.",
            "",
            "| step | interactions | ranks | settings | wall | speed | peak RSS MiB, training "
            "(rank 0 / 1) | peak RSS MiB, whole run (rank 0) | id tables MiB (weights) |",
            "|---|---:|---:|---|---:|---:|---:|---:|---:|",
            *rows,
            "",
        ]
    )
    RESULTS.write_text(text, encoding="utf-8")
    sys.stdout.write(f"written to {RESULTS}\n")


if __name__ == "__main__":
    main()
