"""The report `python -m bench` writes (bench/results.md): the in-process limit, the request
path without HTTP, the HTTP runs against it like for like, the peers, where a request's time
goes, memory and the profile's top frames."""

from __future__ import annotations

import platform
import statistics
import time
from pathlib import Path

from bench.peers.serve import PEERS
from bench.stats import Spread
from bench.wrk import (
    DEFAULT_MODE,
    MODES,
    N_CANDIDATES,
    Served,
    WrkRun,
)
from service.config import cores


def limit_table(limit: dict[int, Spread]) -> list[str]:
    """| users x candidates | calls/s | candidates/s | rows of the in-process limit."""
    lines = ["| users x candidates | calls/s | candidates/s |", "|---|---:|---:|"]
    for n_users, spread in limit.items():
        per_call = n_users * N_CANDIDATES
        candidates = Spread(tuple(v * per_call for v in spread.values))
        lines.append(f"| {n_users} x {N_CANDIDATES} | {spread} | {candidates} |")
    return lines


def rates(runs: list[WrkRun]) -> Spread:
    return Spread(tuple(r.requests_per_second for r in runs))


def http_table(result: Served, like: float, alone: float) -> list[str]:
    """| connections | requests/s | ... | rows of one server, with the in-process ratios."""
    workers = cores()
    lines = [
        "| connections | requests/s | candidates/s | p50 ms | p99 ms | errors"
        f" | / in-process, {workers} processes (like for like) | / in-process, 1 process |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for connections, runs in result.runs.items():
        rps = rates(runs)
        candidates = Spread(tuple(v * N_CANDIDATES for v in rps.values))
        p50 = statistics.median(r.p50_s for r in runs) * 1e3
        p99 = statistics.median(r.p99_s for r in runs) * 1e3
        errors = sum(r.errors for r in runs)
        lines.append(
            f"| {connections} | {rps} | {candidates} | {p50:.2f} | {p99:.2f} | {errors} |"
            f" {rps.median / like:.2f} | {rps.median / alone:.2f} |"
        )
    return lines


def peers_table(served: dict[str, Served]) -> list[str]:
    """Requests/s of hydrarec (batching on, the default, and off) and of each peer, and
    hydrarec's ratio to each, by connection count."""
    peers = [name for name in served if name in PEERS]
    ours = list(MODES)
    header = [f"hydrarec, {m}" for m in ours] + peers
    header += [f"hydrarec ({m.removeprefix('dynamic ')}) / {p}" for p in peers for m in ours]
    lines = [
        "| connections | " + " | ".join(header) + " |",
        "|---:|" + "---:|" * len(header),
    ]
    for c in served[DEFAULT_MODE].runs:
        median = {name: rates(served[name].runs[c]).median for name in ours + peers}
        cells = [str(rates(served[name].runs[c])) for name in ours + peers]
        cells += [f"{median[m] / median[p]:.2f}x" for p in peers for m in ours]
        lines.append(f"| {c} | " + " | ".join(cells) + " |")
    return lines


def costs_table(served: dict[str, Served]) -> list[str]:
    """Mean server-side time per request of each /predict stage, by hydrarec setting."""
    ours = {name: r for name, r in served.items() if r.costs}
    lines = ["| | " + " | ".join(ours) + " |", "|---|" + "---:|" * len(ours)]
    stages = list(dict.fromkeys(k for r in ours.values() for k in r.costs))
    stages.sort(key=lambda k: k == "whole request")  # the stages, then their total
    for stage in stages:
        cells = [
            f"{r.costs[stage] * 1e6:,.0f} µs" if stage in r.costs else "" for r in ours.values()
        ]
        lines.append(f"| {stage} | " + " | ".join(cells) + " |")
    sizes = [f"{r.batch_size:.2f}" if r.batch_size else "" for r in ours.values()]
    lines.append("| requests per session.run | " + " | ".join(sizes) + " |")
    return lines


def report(
    limit: dict[int, Spread],
    served: dict[str, Served],
    threads: int,
    compared: dict[Path, dict[int, Spread]],
    same: dict[int, Spread],
    path: dict[str, Spread],
    frames: tuple[list[tuple[str, float, float]], int],
) -> str:
    workers = cores()
    like, alone = same[workers].median, same[1].median
    lines = [
        "# hydrarec benchmark",
        "",
        f"`make bench` on {platform.machine()}, {cores()} cores, Python"
        f" {platform.python_version()}, {time.strftime('%Y-%m-%d')}. Median (min-max) of repeated"
        " runs. The load generator (wrk, one thread) shares the cores with the server. Every"
        " server is started before the first run and the servers are loaded in turn, one run"
        " each at a time, so that a change in the machine's speed hits them alike.",
        "",
        f"## In-process limit: `session.run`, {N_CANDIDATES} candidates per user, {threads} ORT"
        " thread(s) (the service's per-worker setting)",
        "",
        *limit_table(limit),
        "",
        f"### On the HTTP runs' own bodies ({N_CANDIDATES} candidates, 20 history items, encoded"
        " once by the service's encoder): `session.run` calls/s of N processes at once, summed;"
        f" {workers} processes (as many as the server has workers: the like-for-like side of the"
        " HTTP ratios) once in every round of the HTTP runs, between them, 1 process before",
        "",
        "| processes | calls/s |",
        "|---:|---:|",
        *(f"| {n} | {spread} |" for n, spread in same.items()),
        "",
        "### hydrarec's request path without HTTP (`bench/asgi.py`: the service's ASGI app called"
        " directly, one process, one request at a time, the same bodies)",
        "",
        "| setting | CPU µs per request | requests/s per core | session.run's share |",
        "|---|---:|---:|---:|",
        *(
            f"| {mode} | {spread} | {1e6 / spread.median:,.0f} |"
            f" {(1e6 / alone) / spread.median:.2f} |"
            for mode, spread in path.items()
        ),
    ]
    for other_path, other in compared.items():
        lines += ["", f"### The same for the artifact in `{other_path}` (`--compare`)", ""]
        lines += limit_table(other)
    for name, result in served.items():
        if name in PEERS:
            continue
        default = " (the default)" if name == DEFAULT_MODE else ""
        lines += [
            "",
            f"## HTTP, {name}{default}: `POST /predict` (1 user x {N_CANDIDATES} candidates),"
            f" `python -m service`, {workers} workers x {threads} ORT thread(s)",
            "",
            *http_table(result, like, alone),
        ]
    if any(name in PEERS for name in served):
        lines += [
            "",
            f"## Peers: the same artifact and bodies behind a plain FastAPI app, a bare ASGI app"
            f" (no framework) and BentoML, {workers} workers each (`--peers`, code and pins in"
            " `bench/peers/`), requests/s",
            "",
            *peers_table(served),
        ]
        for peer in PEERS:
            lines += ["", f"### {peer}", "", *http_table(served[peer], like, alone)]
    lines += [
        "",
        "## Memory: resident set of each server after its runs, every process of it",
        "",
        "| server | RSS MiB | processes | MiB per process |",
        "|---|---:|---:|---:|",
        *(
            f"| {name} | {mib:,.0f} | {n} | {mib / max(1, n):,.0f} |"
            for name, (mib, n) in ((name, r.rss_mib) for name, r in served.items())
        ),
        "",
        "## Where a request's time goes (mean per request over all runs above, server side, from"
        " the service's own histograms)",
        "",
        *costs_table(served),
        "",
        "`whole request` is the app's time for a /predict (complete body to last byte handed to"
        " the server), so it includes waiting on the worker's event loop behind other requests; the"
        " `infer` stage with batching on includes waiting for the batch.",
    ]
    top, samples = frames
    lines += [
        "",
        f"## Profile: py-spy over the {workers} workers, {N_CANDIDATES} candidates, 8 connections,"
        f" {DEFAULT_MODE} ({samples:,} samples; flame graph: `bench/profile.svg`)",
        "",
        "| frame | % of samples in it or below | % in it itself |",
        "|---|---:|---:|",
        *(f"| `{f}` | {inclusive:.1f} | {own:.1f} |" for f, inclusive, own in top),
    ]
    return "\n".join(lines) + "\n"
