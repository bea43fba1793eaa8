"""`python -m bench`: the in-process limit, the request path without HTTP (bench/asgi.py), then
HTTP against the real server with wrk, batching on and off (and, with --peers, a plain FastAPI
app, a bare ASGI app and BentoML on the same artifact: bench/peers/), every server loaded in
turn.

Prints a markdown report and writes it to bench/results.md. Client and server share the
machine's cores, so the HTTP figures are a lower bound of what the server alone would do.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from contextlib import ExitStack
from functools import partial
from pathlib import Path

import httpx2 as httpx
import numpy as np
from prometheus_client.parser import text_string_to_metric_families

from bench.asgi import cpu_per_request
from bench.limit import same_bodies
from bench.memory import tree_rss_mib
from bench.peers.serve import PEERS, missing, serving
from bench.profile import record, top_frames
from bench.report import report
from bench.stats import Spread, repeat
from bench.wrk import (
    BODIES_FILE,
    DEFAULT_MODE,
    MODES,
    N_CANDIDATES,
    Served,
    interleaved,
    load_script,
    warm_up,
    wrk_command,
)
from harness.processes import REPOSITORY, Service, running_service
from service.artifact import FIRST_ID
from service.config import Settings, cores
from service.engine import InferenceEngine
from service.repository import load_artifact

RESULTS = Path(__file__).with_name("results.md")
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


def http(
    script: Path,
    seconds: int,
    repeats: int,
    modes: dict[str, dict[str, str]],
    peers: bool,
    each_round: Callable[[], None],
) -> dict[str, Served]:
    """Every hydrarec setting (`python -m service`, production settings) and, with `peers`,
    every peer serving the default model, all started at once and loaded in turn with the wrk
    `script`, `each_round()` after every round (bench.wrk.interleaved)."""
    workers = cores()
    model = load_artifact(REPOSITORY, "movielens").path  # the one the service serves
    with tempfile.TemporaryDirectory() as tmp, ExitStack() as stack:
        folder = Path(tmp)
        servers: dict[str, Service] = {}
        for i, (mode, settings) in enumerate(modes.items()):
            env = {
                "HYDRAREC_LOG_LEVEL": "warning",
                "PROMETHEUS_MULTIPROC_DIR": str(folder / f"m{i}"),
            }
            servers[mode] = stack.enter_context(
                running_service(folder, HYDRAREC_WORKERS=str(workers), **env, **settings)
            )
        for peer in PEERS if peers else ():
            servers[peer] = stack.enter_context(
                serving(peer, model, workers, folder / f"{peer}.log")
            )
        urls = {name: f"{server.url}/predict" for name, server in servers.items()}
        results = interleaved(urls, script, CONNECTIONS, seconds, repeats, each_round)
        served = {}
        for name, server in servers.items():
            costs, batch_size = request_costs(server.url) if name in modes else ({}, None)
            rss = tree_rss_mib(server.process.pid)
            served[name] = Served(results[name], rss, costs, batch_size)
    return served


def in_process_path(bodies: Path, seconds: float, repeats: int) -> dict[str, Spread]:
    """The request path without HTTP (bench.asgi), one process: CPU µs per request by mode."""
    return {
        mode: repeat(partial(cpu_per_request, bodies, seconds, settings), repeats)
        for mode, settings in MODES.items()
    }


PROFILE_SVG = RESULTS.with_name("profile.svg")


def profiled(
    script: Path, seconds: int, workers: int
) -> tuple[list[tuple[str, float, float]], int]:
    """py-spy over the server's workers under wrk load (8 connections, default settings): writes
    bench/profile.svg; the top frames and the number of samples."""
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        env = {"HYDRAREC_LOG_LEVEL": "warning", "HYDRAREC_WORKERS": str(workers)}
        with running_service(folder, **env, **MODES[DEFAULT_MODE]) as service:
            url = f"{service.url}/predict"
            warm_up(url, script)
            load = subprocess.Popen(
                wrk_command(url, script, 8, 2 * seconds + 10), stdout=subprocess.DEVNULL
            )
            try:
                record(service.process.pid, seconds, PROFILE_SVG, "flamegraph")
                record(service.process.pid, seconds, folder / "raw.txt", "raw")
            finally:
                load.terminate()
                load.wait()
            return top_frames(folder / "raw.txt")


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
        " figures (default settings) to add, measured in the same run",
    )
    parser.add_argument(
        "--peers",
        action="store_true",
        help="also serve the same artifact with a plain FastAPI app, a bare ASGI app and BentoML"
        " (bench/peers/) and load them in the same runs",
    )
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        sys.stderr.write("error: wrk not found: apt-get install -y wrk (make bench does it)\n")
        return 2
    if args.peers and (why := missing()):
        sys.stderr.write(f"error: {why}\n")
        return 2
    workers = cores()
    threads = Settings(model_dir=REPOSITORY, workers=workers).threads
    limit = in_process(threads, args.seconds, args.repeats)
    compared = {p: in_process(threads, args.seconds, args.repeats, p) for p in args.compare}
    modes = dict(MODES)
    for p in args.compare:  # the same HTTP runs for the other artifact, in the same run
        modes[f"{DEFAULT_MODE}, `{p}`"] = {
            "HYDRAREC_MODEL_DIR": str(p),
            **MODES[DEFAULT_MODE],
        }
    with tempfile.TemporaryDirectory() as tmp:
        script = load_script(Path(tmp))  # and beside it the bodies every measurement uses
        bodies = script.with_name(BODIES_FILE)
        same = {1: same_bodies(REPOSITORY, bodies, 1, threads, args.seconds, args.repeats)}
        path = in_process_path(bodies, args.seconds, args.repeats)
        during: list[float] = []  # the like-for-like limit, once per round of the HTTP runs

        def limit_round() -> None:
            during.extend(same_bodies(REPOSITORY, bodies, workers, threads, args.seconds, 1).values)

        served = http(script, args.seconds, args.repeats, modes, args.peers, limit_round)
        same[workers] = Spread(tuple(during))
        frames = profiled(script, args.seconds, workers)
    text = report(limit, served, threads, compared, same, path, frames)
    RESULTS.write_text(text)
    sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
