"""`python -m bench`: the in-process limit, then HTTP against the real server with wrk.

Prints a markdown report and writes it to bench/results.md. Client and server share the
machine's cores, so the HTTP figures are a lower bound of what the server alone would do.
"""

from __future__ import annotations

import argparse
import json
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import httpx2 as httpx
import numpy as np
from prometheus_client.parser import text_string_to_metric_families

from bench.limit import same_bodies
from bench.profile import record, top_frames
from bench.stats import Spread, repeat
from service.artifact import FIRST_ID
from service.config import Settings, cores
from service.engine import InferenceEngine
from service.repository import load_artifact
from tests.system.processes import REPOSITORY, running_service

RESULTS = Path(__file__).with_name("results.md")
N_CANDIDATES = 100
BATCH_USERS = (1, 8, 32)
CONNECTIONS = (1, 8, 32)


def calls_per_second(
    engine: InferenceEngine, inputs: dict[str, np.ndarray], seconds: float
) -> float:
    n, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        engine.run(inputs)
        n += 1
    return n / (time.perf_counter() - start)


def graph_inputs(
    engine: InferenceEngine, n_users: int, rng: np.random.Generator
) -> dict[str, np.ndarray]:
    manifest = engine.manifest
    n_items = manifest.vocabularies["item_id"].size
    n_known_users = manifest.vocabularies["user_id"].size
    length = manifest.history_length
    return {
        "user_id": rng.integers(FIRST_ID, FIRST_ID + n_known_users, n_users),
        "history": rng.integers(FIRST_ID, FIRST_ID + n_items, (n_users, length)),
        "candidate": rng.integers(FIRST_ID, FIRST_ID + n_items, n_users * N_CANDIDATES),
        "candidate_row": np.repeat(np.arange(n_users), N_CANDIDATES),
    }


def in_process(
    threads: int, seconds: float, repeats: int, repository: Path = REPOSITORY
) -> dict[int, Spread]:
    """session.run calls/s for B users x 100 candidates, with the service's thread setting."""
    settings = Settings(model_dir=repository)
    engine = InferenceEngine(
        load_artifact(settings.model_dir, settings.model_name), threads=threads
    )
    rng = np.random.default_rng(0)
    results = {}
    for n_users in BATCH_USERS:
        inputs = {k: v.astype(np.int64) for k, v in graph_inputs(engine, n_users, rng).items()}
        engine.run(inputs)
        results[n_users] = repeat(partial(calls_per_second, engine, inputs, seconds), repeats)
    return results


WRK_SCRIPT = """
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
local bodies = {}
for line in io.lines("%s") do bodies[#bodies + 1] = line end
local i = 0
request = function()
  i = i %% #bodies + 1
  return wrk.format(nil, nil, nil, bodies[i])
end
"""
UNITS = {"us": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0}


@dataclass(frozen=True)
class WrkRun:
    requests_per_second: float
    p50_s: float
    p99_s: float
    errors: int


def request_bodies(path: Path, n: int = 64) -> None:
    """n JSON bodies, one per line: known users, 20 history items, 100 candidates."""
    artifact = load_artifact(REPOSITORY, "movielens")
    users, items = artifact.read_vocab("user_id"), artifact.read_vocab("item_id")
    rng = np.random.default_rng(1)
    lines = []
    for _ in range(n):
        picked = rng.choice(len(items), 20 + N_CANDIDATES, replace=False)
        body = {
            "user_id": users[int(rng.integers(len(users)))],
            "history": [items[i] for i in picked[:20]],
            "candidates": [items[i] for i in picked[20:]],
        }
        lines.append(json.dumps(body))
    path.write_text("\n".join(lines) + "\n")


def _seconds(text: str) -> float:
    value, unit = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text).groups()  # type: ignore[union-attr]
    return float(value) * UNITS[unit]


def wrk(url: str, script: Path, connections: int, seconds: int) -> WrkRun:
    out = subprocess.run(
        [
            "wrk",
            "-t1",
            f"-c{connections}",
            f"-d{seconds}s",
            "--latency",
            "-s",
            str(script),
            f"{url}/predict",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    p50 = _seconds(re.search(r"\s50%\s+(\S+)", out).group(1))  # type: ignore[union-attr]
    p99 = _seconds(re.search(r"\s99%\s+(\S+)", out).group(1))  # type: ignore[union-attr]
    non_2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    socket = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    errors = (int(non_2xx.group(1)) if non_2xx else 0) + (
        sum(int(g) for g in socket.groups()) if socket else 0
    )
    return WrkRun(rps, p50, p99, errors)


@dataclass(frozen=True)
class Served:
    """The wrk runs of one server setting and where its requests' time went."""

    runs: dict[int, list[WrkRun]]  # by connection count
    costs: dict[str, float]  # mean seconds per request: each stage, the whole handler
    batch_size: float | None  # mean requests per session.run (batching on)


STAGE_METRIC = "hydrarec_predict_stage_duration_seconds"
HANDLER_METRIC = "hydrarec_http_request_duration_seconds"


def request_costs(url: str) -> tuple[dict[str, float], float | None]:
    """Mean seconds per request of each /predict stage and of the whole request in the app
    (the middleware's histogram), and the mean batch size, from the server's own /metrics."""
    text = httpx.get(f"{url}/metrics", timeout=10).text
    sums: dict[tuple[str, str], float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name.endswith(("_sum", "_count")):
                key = sample.labels.get("stage") or sample.labels.get("handler") or ""
                sums[(sample.name, key)] = sums.get((sample.name, key), 0.0) + sample.value
    costs = {}
    for (name, key), total in sums.items():
        if name == f"{STAGE_METRIC}_sum" or (name == f"{HANDLER_METRIC}_sum" and key == "/predict"):
            count = sums[(name.replace("_sum", "_count"), key)]
            costs[key if name.startswith(STAGE_METRIC) else "whole request"] = total / max(1, count)
    batches = sums.get(("hydrarec_batch_requests_count", ""), 0.0)
    size = sums.get(("hydrarec_batch_requests_sum", ""), 0.0) / batches if batches else None
    return costs, size


def http(seconds: int, repeats: int, settings: dict[str, str]) -> Served:
    """wrk against `python -m service` (production settings) at each connection count."""
    results: dict[int, list[WrkRun]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        bodies, script = folder / "bodies.jsonl", folder / "post.lua"
        request_bodies(bodies)
        script.write_text(WRK_SCRIPT % bodies)
        env = {"HYDRAREC_LOG_LEVEL": "warning", "PROMETHEUS_MULTIPROC_DIR": str(folder / "m")}
        with running_service(folder, **env, **settings) as service:
            wrk(service.url, script, 8, 1)  # warm-up
            for connections in CONNECTIONS:
                results[connections] = [
                    wrk(service.url, script, connections, seconds) for _ in range(repeats)
                ]
            costs, batch_size = request_costs(service.url)
    return Served(results, costs, batch_size)


PROFILE_SVG = RESULTS.with_name("profile.svg")


def profiled(seconds: int, workers: int) -> tuple[list[tuple[str, float, float]], int]:
    """py-spy over the server's workers under wrk load (8 connections, batching off): writes
    bench/profile.svg; the top frames and the number of samples."""
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        bodies, script = folder / "bodies.jsonl", folder / "post.lua"
        request_bodies(bodies)
        script.write_text(WRK_SCRIPT % bodies)
        env = {"HYDRAREC_LOG_LEVEL": "warning", "HYDRAREC_WORKERS": str(workers)}
        with running_service(folder, **env, **MODES["dynamic batching off"]) as service:
            wrk(service.url, script, 8, 1)  # warm-up
            load = subprocess.Popen(
                [
                    "wrk",
                    "-t1",
                    "-c8",
                    f"-d{2 * seconds + 10}s",
                    "-s",
                    str(script),
                    f"{service.url}/predict",
                ],
                stdout=subprocess.DEVNULL,
            )
            try:
                record(service.process.pid, seconds, PROFILE_SVG, "flamegraph")
                record(service.process.pid, seconds, folder / "raw.txt", "raw")
            finally:
                load.terminate()
                load.wait()
            return top_frames(folder / "raw.txt")


MODES = {
    "dynamic batching on": {"HYDRAREC_BATCH_MAX_CANDIDATES": "2000"},
    "dynamic batching off": {"HYDRAREC_BATCH_MAX_CANDIDATES": "0"},
}


def limit_table(limit: dict[int, Spread]) -> list[str]:
    """| users x candidates | calls/s | candidates/s | rows of the in-process limit."""
    lines = ["| users x candidates | calls/s | candidates/s |", "|---|---:|---:|"]
    for n_users, spread in limit.items():
        per_call = n_users * N_CANDIDATES
        candidates = Spread(tuple(v * per_call for v in spread.values))
        lines.append(f"| {n_users} x {N_CANDIDATES} | {spread} | {candidates} |")
    return lines


def report(
    limit: dict[int, Spread],
    served: dict[str, Served],
    threads: int,
    compared: dict[Path, dict[int, Spread]],
    same: dict[int, Spread],
    frames: tuple[list[tuple[str, float, float]], int],
) -> str:
    workers = cores()
    lines = [
        "# hydrarec benchmark",
        "",
        f"`make bench` on {platform.machine()}, {cores()} cores, Python"
        f" {platform.python_version()}, {time.strftime('%Y-%m-%d')}. Median (min-max) of repeated"
        " runs. The load generator (wrk, one thread) shares the cores with the server.",
        "",
        f"## In-process limit: `session.run`, {N_CANDIDATES} candidates per user, {threads} ORT"
        " thread(s) (the service's per-worker setting)",
        "",
        *limit_table(limit),
        "",
        f"### On the HTTP runs' own bodies ({N_CANDIDATES} candidates, 20 history items, encoded"
        " once by the service's encoder): `session.run` calls/s of N processes at once, summed",
        "",
        "| processes | calls/s |",
        "|---:|---:|",
        *(f"| {n} | {spread} |" for n, spread in same.items()),
    ]
    for path, other in compared.items():
        lines += ["", f"### The same for the artifact in `{path}` (`--compare`)", ""]
        lines += limit_table(other)
    like, alone = same[workers].median, same[1].median
    for mode, result in served.items():
        lines += [
            "",
            f"## HTTP, {mode}: `POST /predict` (1 user x {N_CANDIDATES} candidates),"
            f" `python -m service`, {workers} workers x {threads} ORT thread(s)",
            "",
            "| connections | requests/s | candidates/s | p50 ms | p99 ms | errors"
            f" | / in-process, {workers} processes (like for like) | / in-process, 1 process |",
            "|---:|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for connections, runs in result.runs.items():
            rps = Spread(tuple(r.requests_per_second for r in runs))
            candidates = Spread(tuple(v * N_CANDIDATES for v in rps.values))
            p50 = statistics.median(r.p50_s for r in runs) * 1e3
            p99 = statistics.median(r.p99_s for r in runs) * 1e3
            errors = sum(r.errors for r in runs)
            lines.append(
                f"| {connections} | {rps} | {candidates} | {p50:.2f} | {p99:.2f} | {errors} |"
                f" {rps.median / like:.2f} | {rps.median / alone:.2f} |"
            )
    lines += [
        "",
        "## Where a request's time goes (mean per request over all runs above, server side, from"
        " the service's own histograms)",
        "",
        "| | " + " | ".join(served) + " |",
        "|---|" + "---:|" * len(served),
    ]
    stages = list(dict.fromkeys(k for r in served.values() for k in r.costs))
    stages.sort(key=lambda k: k == "whole request")  # the stages, then their total
    for stage in stages:
        cells = [
            f"{r.costs[stage] * 1e6:,.0f} µs" if stage in r.costs else "" for r in served.values()
        ]
        lines.append(f"| {stage} | " + " | ".join(cells) + " |")
    sizes = [f"{r.batch_size:.2f}" if r.batch_size else "" for r in served.values()]
    lines.append("| requests per session.run | " + " | ".join(sizes) + " |")
    lines += [
        "",
        "`whole request` is the app's time for a /predict (complete body to last byte handed to"
        " the server), so it includes waiting on the worker's event loop behind other requests; the"
        " `infer` stage with batching on includes waiting for the batch.",
    ]
    top, samples = frames
    lines += [
        "",
        f"## Profile: py-spy over the {workers} workers, {N_CANDIDATES} candidates, 8 connections,"
        f" batching off ({samples:,} samples; flame graph: `bench/profile.svg`)",
        "",
        "| frame | % of samples in it or below | % in it itself |",
        "|---|---:|---:|",
        *(f"| `{f}` | {inclusive:.1f} | {own:.1f} |" for f, inclusive, own in top),
    ]
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--seconds", type=int, default=5, help="length of each measurement")
    parser.add_argument("--repeats", type=int, default=3, help="measurements per point")
    parser.add_argument(
        "--compare",
        type=Path,
        action="append",
        default=[],
        help="another model repository (e.g. an int8 export) whose in-process limit and HTTP"
        " figures (batching off) to add, measured in the same run",
    )
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        sys.stderr.write("error: wrk not found: apt-get install -y wrk (make bench does it)\n")
        return 2
    workers = cores()
    threads = Settings(model_dir=REPOSITORY, workers=workers).threads
    limit = in_process(threads, args.seconds, args.repeats)
    with tempfile.TemporaryDirectory() as tmp:
        bodies = Path(tmp) / "bodies.jsonl"
        request_bodies(bodies)  # the bodies every HTTP run sends (the same seed)
        same = {
            n: same_bodies(REPOSITORY, bodies, n, threads, args.seconds, args.repeats)
            for n in sorted({1, workers})
        }
    compared = {p: in_process(threads, args.seconds, args.repeats, p) for p in args.compare}
    served = {
        mode: http(args.seconds, args.repeats, {"HYDRAREC_WORKERS": str(workers), **settings})
        for mode, settings in MODES.items()
    }
    for path in args.compare:  # the same HTTP run for the other artifact, in the same run
        served[f"dynamic batching off, `{path}`"] = http(
            args.seconds,
            args.repeats,
            {"HYDRAREC_WORKERS": str(workers), "HYDRAREC_MODEL_DIR": str(path)}
            | MODES["dynamic batching off"],
        )
    frames = profiled(args.seconds, workers)
    text = report(limit, served, threads, compared, same, frames)
    RESULTS.write_text(text)
    sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
