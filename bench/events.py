"""`python -m bench.events` (run by `make bench`): the event store under the real server, with
SQLite (the default) and with Redis (a redis-server started here, appendonly with appendfsync
always, as compose and Kubernetes run it). Writes bench/events.md.

Ingestion: wrk posting batches of 100 events (64 distinct batches cycled, no event_id: every
event is stored) to POST /events; events/s = batches/s x 100. Stored history: the same /predict
requests (64 distinct users, 20 history items each, 100 candidates) once carrying their history
and once without it, the store holding exactly that history per user, in turn at 1 and 8
connections, REPEATS rounds, medians; the ratio is stored / carried requests/s.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

import numpy as np

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
from eventstore import Event, open_store
from harness.processes import REPOSITORY, running_service
from harness.redis_server import running_redis
from service.config import Settings
from service.repository import load_artifact

RESULTS = Path(__file__).with_name("events.md")
BATCH = 100  # events per POST /events
N_USERS = 64
CONNECTIONS = (1, 8)
REPEATS = 3
BACKENDS = ("sqlite", "redis")
MODES = ("carried", "stored")


@dataclass(frozen=True)
class Measured:
    """One backend's figures: /predict by mode and connections, and ingestion (8 conn.)."""

    backend: str
    predict: dict[str, dict[int, WrkRun]]
    ingestion: WrkRun


def bodies(folder: Path) -> dict[str, Path]:
    """The wrk scripts: `carried` and `stored` /predict bodies of the same users, `events`
    batches; the events that give each user of the /predict bodies their history in the store
    are written to `history.json`."""
    artifact = load_artifact(REPOSITORY, "movielens")
    users, items = artifact.read_vocab("user_id"), artifact.read_vocab("item_id")
    rng = np.random.default_rng(2)
    carried, stored, history = [], [], []
    for u in rng.choice(len(users), N_USERS, replace=False):
        picked = [items[i] for i in rng.choice(len(items), N_HISTORY + N_CANDIDATES, replace=False)]
        body = {"user_id": users[u], "candidates": picked[N_HISTORY:]}
        stored.append(body)
        carried.append(body | {"history": picked[:N_HISTORY]})
        history += [(users[u], item, 1_000 + t) for t, item in enumerate(picked[:N_HISTORY])]
    batches = [
        {
            "events": [
                {"user_id": users[int(rng.integers(len(users)))],
                 "item_id": items[int(rng.integers(len(items)))]}
                for _ in range(BATCH)
            ]
        }
        for _ in range(64)
    ]  # fmt: skip
    (folder / "history.json").write_text(json.dumps(history))
    scripts = {}
    for name, lines in (("carried", carried), ("stored", stored), ("events", batches)):
        (folder / f"{name}.jsonl").write_text("\n".join(json.dumps(b) for b in lines) + "\n")
        scripts[name] = folder / f"{name}.lua"
        scripts[name].write_text(SCRIPT % (folder / f"{name}.jsonl"))
    return scripts


def fill(url: str, folder: Path) -> None:
    """Each /predict user's history, as events in time order."""
    store = open_store(url)
    store.add(
        [Event(u, i, float(t)) for u, i, t in json.loads((folder / "history.json").read_text())]
    )
    store.close()


def measure(folder: Path, backend: str, seconds: int) -> Measured:
    """Both figures against one backend (the server with its default settings)."""
    scripts = bodies(folder)
    with ExitStack() as stack:
        if backend == "redis":
            url = stack.enter_context(running_redis(folder / "redis")).url
        else:
            url = f"sqlite:///{folder}/state/events.db"
        fill(url, folder)
        service = stack.enter_context(running_service(folder, HYDRAREC_STORE_URL=url))
        predict = f"{service.url}/predict"
        modes: dict[str, dict[int, list[WrkRun]]] = {m: {c: [] for c in CONNECTIONS} for m in MODES}
        for mode in MODES:
            warm_up(predict, scripts[mode])
        for c in CONNECTIONS:
            for _ in range(REPEATS):  # in turn: the machine's drift hits both alike
                for mode in MODES:
                    modes[mode][c].append(wrk(predict, scripts[mode], c, seconds))
        events = f"{service.url}/events"
        warm_up(events, scripts["events"])
        ingestion = [wrk(events, scripts["events"], 8, seconds) for _ in range(REPEATS)]
    return Measured(
        backend,
        {mode: {c: median_run(runs) for c, runs in by_c.items()} for mode, by_c in modes.items()},
        median_run(ingestion),
    )


def report(results: list[Measured], seconds: int) -> str:
    """The markdown report."""
    workers = Settings(model_dir=REPOSITORY).workers
    lines = [
        "# The event store",
        "",
        f"`python -m bench.events` (run by `make bench`), {time.strftime('%Y-%m-%d')}, the real "
        f"server with {workers} workers on this machine's cores (wrk on the same cores); "
        f"{seconds} s per run, {REPEATS} rounds, medians (p50 and p99 of the median run). Redis: "
        "a redis-server on the same machine with appendonly yes and appendfsync always; SQLite: "
        "the default file store (WAL, synchronous=FULL).",
        "",
        "| store | POST /events, batches of 100, 8 conn.: events/s | p50 | p99 |",
        "|---|---:|---:|---:|",
    ]
    for r in results:
        run = r.ingestion
        lines.append(
            f"| {r.backend} | {run.requests_per_second * BATCH:,.0f} | {run.p50_s * 1e3:.2f} ms "
            f"| {run.p99_s * 1e3:.2f} ms |" + (f" {run.errors} errors" if run.errors else "")
        )
    lines += [
        "",
        "| store | connections | history carried: requests/s, p50, p99 | history from the "
        "store: requests/s, p50, p99 | stored / carried |",
        "|---|---:|---:|---:|---:|",
    ]
    for r in results:
        for c in CONNECTIONS:
            carried, stored = r.predict["carried"][c], r.predict["stored"][c]
            ratio = stored.requests_per_second / carried.requests_per_second
            lines.append(
                f"| {r.backend} | {c} | {run_cell(carried)} | {run_cell(stored)} | {ratio:.2f}x |"
            )
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.events", description=__doc__)
    parser.add_argument("--seconds", type=int, default=10, help="length of each measurement")
    parser.add_argument("--backends", nargs="+", choices=BACKENDS, default=list(BACKENDS))
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    results = []
    for backend in args.backends:
        with tempfile.TemporaryDirectory(prefix="hydrarec-events-") as tmp:
            results.append(measure(Path(tmp), backend, args.seconds))
    text = report(results, args.seconds)
    args.out.write_text(text)
    print(text, end="")  # noqa: T201 - the report is the command's output
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
