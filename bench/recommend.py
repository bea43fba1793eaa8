"""`python -m bench.recommend` (run by `make bench`): recommend mode beside candidate mode, at the
default catalogue and grown to 100k and 1M items, in process and over HTTP; the index's build
time, the server's start-up and resident memory, and the IVF index's recall of the exact top R.
Writes bench/recommend.md.

A grown catalogue is the default model with synthetic items added through `catalogue`'s own
publishing path (training.publish.catalogue.publish_items): each new item's rows are a random
catalogue item's rows plus Gaussian noise (0.3 of each dimension's spread), so the vectors are
spread as the trained ones are, and the graph, the vocabulary and the item vectors all grow.
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
from onnx import numpy_helper

from bench.memory import tree_rss_mib
from bench.wrk import (
    N_CANDIDATES,
    N_HISTORY,
    SCRIPT,
    WrkRun,
    median_run,
    run_cell,
    warm_up,
    wrk,
)
from harness.processes import REPOSITORY, running_service
from service.artifact import FIRST_ID, MODEL_FILE, Manifest, write_manifest
from service.config import Settings
from service.metrics import Metrics
from service.predictor import Predictor, index_settings
from service.repository import load_artifact
from service.retrieval import IndexSettings, Retriever
from service.schemas import PredictRequest
from training.publish.catalogue import publish_items

RESULTS = Path(__file__).with_name("recommend.md")
SIZES = (0, 100_000, 1_000_000)  # items added to the default catalogue
NOISE = 0.3
N_USERS = 64
CONNECTIONS = (1, 8)
REPEATS = 3  # rounds, the two modes in turn in each, so the machine's drift hits both alike
MODEL = "movielens"


@dataclass(frozen=True)
class Measured:
    """One catalogue size's figures."""

    items: int
    index: str  # exact | ivf
    build_s: float  # the index, in process
    startup_s: float  # the server: launch to ready
    rss_mib: float  # the server's processes after the runs
    recall: float | None  # the IVF's share of the exact top R (None: the index is exact)
    in_process: dict[str, tuple[float, float, float]]  # mode -> requests/s, p50 s, p99 s
    http: dict[str, dict[int, WrkRun]]  # mode -> connections -> the median run by requests/s


def grown(folder: Path, added: int, seed: int = 0) -> Path:
    """A model repository under `folder` holding the default model as version 1 and, with
    `added` > 0, version 2: version 1 with `added` synthetic items."""
    default = load_artifact(REPOSITORY, MODEL)
    first = folder / MODEL / "1"
    shutil.copytree(default.path, first)
    manifest = Manifest.model_validate_json((first / "manifest.json").read_text())
    write_manifest(first, manifest.model_copy(update={"version": 1}))
    if not added:
        return folder
    artifact = load_artifact(folder, MODEL, 1)
    graph = onnx.load(str(first / MODEL_FILE))
    initializers = {i.name: i for i in graph.graph.initializer}
    rng = np.random.default_rng(seed)
    source = rng.integers(FIRST_ID, FIRST_ID + manifest.vocabularies["item_id"].size, added)
    rows = {}
    for key, name in manifest.catalogue.tables.items():
        table = numpy_helper.to_array(initializers[name])[FIRST_ID:]
        base = table[source - FIRST_ID]
        noise = NOISE * table.std(axis=0) * rng.standard_normal(base.shape)
        rows[key] = (base + noise).astype(np.float32)
    ids = artifact.read_vocab("item_id") + [f"synthetic-{i}" for i in range(added)]
    publish_items(artifact, ids, rows)
    return folder


def bodies(repository: Path, recommend: bool, seed: int = 1) -> list[dict[str, object]]:
    """N_USERS request bodies over the served catalogue: known users, N_HISTORY history items
    and N_CANDIDATES candidates, or (`recommend`) the same users and histories without them."""
    artifact = load_artifact(repository, MODEL)
    users, items = artifact.read_vocab("user_id"), artifact.read_vocab("item_id")
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(N_USERS):
        picked = rng.choice(len(items), N_HISTORY + N_CANDIDATES, replace=False)
        body: dict[str, object] = {
            "user_id": users[int(rng.integers(len(users)))],
            "history": [items[i] for i in picked[:N_HISTORY]],
        }
        if not recommend:
            body["candidates"] = [items[i] for i in picked[N_HISTORY:]]
        out.append(body)
    return out


def in_process(
    predictor: Predictor, requests: list[PredictRequest], seconds: float
) -> tuple[float, float, float]:
    """Requests/s, p50 and p99 of one thread answering `requests` in turn for `seconds`."""
    metrics = Metrics()
    metrics.start_model(predictor.ref, [t.name for t in predictor.artifact.manifest.tasks])
    answer = predictor.predict if requests[0].candidates is not None else predictor.recommend
    times = []
    start = time.perf_counter()
    while time.perf_counter() - start < seconds:
        for request in requests:
            began = time.perf_counter()
            answer(request, metrics)
            times.append(time.perf_counter() - began)
    spent = np.array(times)
    return len(spent) / spent.sum(), float(np.median(spent)), float(np.percentile(spent, 99))


def recall(predictor: Predictor, requests: list[PredictRequest], depth: int) -> float:
    """The IVF index's share of the exact index's top `depth`, over the requests' users."""
    assert predictor.retriever is not None
    exact = Retriever(predictor.retriever.vectors, IndexSettings(10**12, 0, 1, 1))
    shares = []
    for request in requests:
        encoded = predictor.encoder.encode(request.user_id, request.history or (), ())
        query = predictor.engine.run(encoded.inputs)["query"][0]
        excluded = predictor.encoder.known_items(request.history or ())
        truth = set(exact.search(query, depth, excluded).tolist())
        found = set(predictor.retriever.search(query, depth, excluded).tolist())
        shares.append(len(truth & found) / len(truth))
    return float(np.mean(shares))


def measure(work: Path, added: int, seconds: int) -> Measured:
    """Every figure of the default catalogue grown by `added` items."""
    repository = grown(work / f"models-{added}", added)
    settings = Settings(model_dir=repository, ort_threads=1)
    started = time.perf_counter()
    artifact = load_artifact(repository, MODEL)
    assert artifact.manifest.retrieval is not None
    Retriever.load(artifact, index_settings(settings))
    build_s = time.perf_counter() - started
    predictor = Predictor.load(settings)
    assert predictor.retriever is not None
    modes = {
        "candidates (100)": bodies(repository, recommend=False),
        "recommend": bodies(repository, recommend=True),
    }
    requests = {m: [PredictRequest.model_validate(b) for b in bs] for m, bs in modes.items()}
    rounds: dict[str, list[tuple[float, float, float]]] = {m: [] for m in modes}
    for _ in range(REPEATS):
        for mode, asked in requests.items():
            rounds[mode].append(in_process(predictor, asked, seconds))
    local = {m: sorted(r)[len(r) // 2] for m, r in rounds.items()}
    found = (
        None
        if predictor.retriever.kind == "exact"
        else recall(predictor, requests["recommend"], settings.retrieve)
    )
    n_items = len(predictor.retriever)
    del predictor
    scripts: dict[str, Path] = {}
    for mode, listed in modes.items():
        lines = work / f"bodies-{added}-{len(scripts)}.jsonl"
        lines.write_text("".join(json.dumps(b) + "\n" for b in listed))
        scripts[mode] = work / f"post-{added}-{len(scripts)}.lua"
        scripts[mode].write_text(SCRIPT % lines)
    launched = time.perf_counter()
    with running_service(work, HYDRAREC_MODEL_DIR=str(repository)) as service:
        startup_s = time.perf_counter() - launched
        url = f"{service.url}/predict"
        for script in scripts.values():
            warm_up(url, script)
        runs: dict[str, dict[int, list[WrkRun]]] = {m: {c: [] for c in CONNECTIONS} for m in modes}
        for c in CONNECTIONS:
            for _ in range(REPEATS):
                for mode, script in scripts.items():
                    runs[mode][c].append(wrk(url, script, c, seconds))
        http = {
            mode: {c: median_run(listed) for c, listed in by_c.items()}
            for mode, by_c in runs.items()
        }
        rss, _ = tree_rss_mib(service.process.pid)
    kind = "exact" if found is None else "ivf"
    return Measured(n_items, kind, build_s, startup_s, rss, found, local, http)


def _ratio(measured: Measured, connections: int) -> float:
    """Recommend mode's HTTP requests/s over candidate mode's."""
    runs = {mode: by_c[connections] for mode, by_c in measured.http.items()}
    return runs["recommend"].requests_per_second / runs["candidates (100)"].requests_per_second


def report(results: list[Measured], seconds: int) -> str:
    """The markdown report."""
    lines = [
        "# Recommend mode against candidate mode",
        "",
        f"`python -m bench.recommend` (run by `make bench`), {time.strftime('%Y-%m-%d')}, "
        f"{Settings(model_dir=REPOSITORY).workers} workers on this machine's cores, one ONNX "
        f"Runtime thread each; {seconds} s per run, the two modes in turn, {REPEATS} rounds, "
        "medians (the p50 and p99 are the median run's). Recommend mode: the user alone "
        "through the graph, the index's top 100 (history dropped), the rank graph on those "
        "100. Candidate mode: the same users and histories with 100 random candidates through "
        "the graph.",
        "",
        "| catalogue | index | index build | server start-up | server RSS | recall of exact "
        "top 100 |",
        "|---:|---|---:|---:|---:|---:|",
    ]
    for r in results:
        found = "exact" if r.recall is None else f"{r.recall:.3f}"
        lines.append(
            f"| {r.items:,} | {r.index} | {r.build_s:.1f} s | {r.startup_s:.1f} s | "
            f"{r.rss_mib:,.0f} MiB | {found} |"
        )
    lines += [
        "",
        "| catalogue | mode | in process: requests/s, p50, p99 | "
        + " | ".join(f"HTTP {c} conn.: requests/s, p50, p99" for c in CONNECTIONS)
        + " | recommend / candidates (HTTP, "
        + ", ".join(f"{c}" for c in CONNECTIONS)
        + " conn.) |",
        "|---:|---|---:|" + "---:|" * len(CONNECTIONS) + "---:|",
    ]
    for r in results:
        for mode, (rps, p50, p99) in r.in_process.items():
            cells = [run_cell(run) for run in r.http[mode].values()]
            ratio = ""
            if mode == "recommend":
                ratio = ", ".join(f"{_ratio(r, c):.2f}x" for c in CONNECTIONS)
            lines.append(
                f"| {r.items:,} | {mode} | {rps:,.0f}, {p50 * 1e3:.2f} ms, {p99 * 1e3:.2f} ms | "
                + " | ".join(cells)
                + f" | {ratio} |"
            )
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.recommend", description=__doc__)
    parser.add_argument("--seconds", type=int, default=10, help="length of each measurement")
    parser.add_argument(
        "--sizes", type=int, nargs="+", default=list(SIZES), help="items added per catalogue"
    )
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="hydrarec-recommend-") as tmp:
        results = [measure(Path(tmp), added, args.seconds) for added in args.sizes]
    text = report(results, args.seconds)
    args.out.write_text(text)
    print(text, end="")  # noqa: T201 - the report is the command's output
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
