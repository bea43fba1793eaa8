"""The in-process limit on the very bodies the HTTP runs send: each body encoded once by the
service's own encoder, then `session.run` in a loop, in as many processes at once as the server
has workers (the like-for-like side of the headline ratio) and in one."""

from __future__ import annotations

import json
import multiprocessing
import time
from pathlib import Path

import numpy as np

from bench.stats import Spread
from service.encoding import RequestEncoder
from service.engine import InferenceEngine
from service.repository import load_artifact

START_DELAY_S = 3.0  # every process loads its model first, then all start at the same moment


def encoded(repository: Path, bodies: Path) -> list[dict[str, np.ndarray]]:
    """The graph inputs of every body (one JSON per line), by the service's own encoder."""
    artifact = load_artifact(repository, "movielens")
    encoder = RequestEncoder(
        artifact.read_vocab("user_id"),
        artifact.read_vocab("item_id"),
        artifact.manifest.history_length,
    )
    inputs = []
    for line in bodies.read_text().splitlines():
        body = json.loads(line)
        inputs.append(encoder.encode(body["user_id"], body["history"], body["candidates"]).inputs)
    return inputs


def _rate(task: tuple[Path, Path, int, float, float]) -> float:
    """session.run calls/s of one process from `start` (a wall-clock time) for `seconds`."""
    repository, bodies, threads, start, seconds = task
    engine = InferenceEngine(load_artifact(repository, "movielens"), threads=threads)
    inputs = encoded(repository, bodies)
    engine.run(inputs[0])
    while time.time() < start:
        time.sleep(0.001)
    n, began = 0, time.perf_counter()
    while time.perf_counter() - began < seconds:
        engine.run(inputs[n % len(inputs)])
        n += 1
    return n / (time.perf_counter() - began)


def same_bodies(
    repository: Path, bodies: Path, processes: int, threads: int, seconds: float, repeats: int
) -> Spread:
    """calls/s of `processes` processes running at once, summed (median of `repeats`)."""
    context = multiprocessing.get_context("spawn")
    totals = []
    with context.Pool(processes) as pool:
        for _ in range(repeats):
            start = time.time() + START_DELAY_S
            task = (repository, bodies, threads, start, seconds)
            totals.append(sum(pool.map(_rate, [task] * processes)))
    return Spread(tuple(totals))
