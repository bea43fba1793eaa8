"""`python -m bench.explain` (run by `make bench`): what `"explain": true` costs, in process.

The service's request path without HTTP (bench/asgi.py: the whole ASGI app, one request at a
time, one ORT thread, a fresh process per run) answers the same 64 requests (known users, a
50-item history, 100 candidates, the default top_k; and the same users in recommend mode)
plain and explained, in turn for REPEATS rounds; CPU microseconds per request, medians, and
their ratio. The issue's budget: an explained request at most 5x the CPU of the same request
unexplained. Writes bench/explain.md.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

from bench.asgi import cpu_per_request
from bench.wrk import N_CANDIDATES
from harness.processes import REPOSITORY
from service.config import Settings
from service.repository import load_artifact

RESULTS = Path(__file__).with_name("explain.md")
N_HISTORY = 50  # the explained request
N_USERS = 64
REPEATS = 3
MODES = ("candidates", "recommend")


def bodies(folder: Path, version: int | None) -> dict[tuple[str, bool], Path]:
    """Request files by (mode, explained): the same users and histories in each."""
    artifact = load_artifact(REPOSITORY, "movielens", version)
    users, items = artifact.read_vocab("user_id"), artifact.read_vocab("item_id")
    rng = np.random.default_rng(4)
    plain: dict[str, list[dict[str, object]]] = {mode: [] for mode in MODES}
    for u in rng.choice(len(users), N_USERS, replace=False):
        picked = [items[i] for i in rng.choice(len(items), N_HISTORY + N_CANDIDATES, replace=False)]
        body = {"user_id": users[u], "history": picked[:N_HISTORY]}
        plain["candidates"].append(body | {"candidates": picked[N_HISTORY:]})
        plain["recommend"].append(body)
    files = {}
    for mode, lines in plain.items():
        for explained in (False, True):
            path = folder / f"{mode}-{'explained' if explained else 'plain'}.jsonl"
            path.write_text("".join(json.dumps(b | {"explain": explained}) + "\n" for b in lines))
            files[(mode, explained)] = path
    return files


def measure(version: int | None, seconds: float) -> dict[tuple[str, bool], float]:
    """Median CPU µs per request of each (mode, explained), rounds in turn."""
    settings = {} if version is None else {"HYDRAREC_MODEL_VERSION": str(version)}
    with tempfile.TemporaryDirectory(prefix="hydrarec-explain-") as tmp:
        files = bodies(Path(tmp), version)
        runs: dict[tuple[str, bool], list[float]] = {key: [] for key in files}
        for _ in range(REPEATS):  # in turn: the machine's drift hits every setting alike
            for key, path in files.items():
                runs[key].append(cpu_per_request(path, seconds, settings))
    return {key: statistics.median(values) for key, values in runs.items()}


def report(results: dict[int, dict[tuple[str, bool], float]], seconds: float) -> str:
    """The markdown report."""
    lines = [
        "# What an explanation costs",
        "",
        f"`python -m bench.explain` (run by `make bench`), {time.strftime('%Y-%m-%d')}: the "
        f"request path in process (bench/asgi.py, one ORT thread), {N_USERS} known users with a "
        f"{N_HISTORY}-item history, {N_CANDIDATES} candidates or recommend mode, the default "
        f"top_k and HYDRAREC_EXPLAIN_* defaults; {seconds:g} s per run, {REPEATS} rounds in "
        "turn, medians. Budget: explained <= 5x plain.",
        "",
        "| model | mode | plain: CPU µs / request | explained | explained / plain |",
        "|---|---|---:|---:|---:|",
    ]
    for version, figures in results.items():
        for mode in MODES:
            plain, explained = figures[(mode, False)], figures[(mode, True)]
            lines.append(
                f"| movielens v{version} | {mode} | {plain:,.0f} | {explained:,.0f} "
                f"| {explained / plain:.2f}x |"
            )
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.explain", description=__doc__)
    parser.add_argument("--seconds", type=float, default=5.0, help="length of each run")
    parser.add_argument(
        "--versions",
        type=int,
        nargs="+",
        help="model versions to measure (default: the one the service serves)",
    )
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    served = load_artifact(Settings(model_dir=REPOSITORY).model_dir, "movielens").manifest.version
    results = {v: measure(v, args.seconds) for v in args.versions or [served]}
    text = report(results, args.seconds)
    args.out.write_text(text)
    print(text, end="")  # noqa: T201 - the report is the command's output
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
