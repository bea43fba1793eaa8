"""`python -m bench.soak`: a bounded stream of requests against the real server; RSS of the
server processes at start and end, and the error count. Writes bench/soak.md."""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx2 as httpx

from bench.memory import tree_rss_mib
from bench.wrk import request_bodies
from harness.processes import Service, running_service

RESULTS = Path(__file__).with_name("soak.md")
CLIENTS = 8


def soak(service: Service, bodies: list[bytes], n_requests: int) -> dict[int, int]:
    """Send n_requests over CLIENTS connections; the count of each status (0 = transport error)."""
    per_client = n_requests // CLIENTS
    headers = {"content-type": "application/json"}

    def client(k: int) -> dict[int, int]:
        counts: dict[int, int] = {}
        with httpx.Client(base_url=service.url, timeout=30, headers=headers) as c:
            for i in range(per_client):
                try:
                    status = c.post("/predict", content=bodies[(k + i) % len(bodies)]).status_code
                except httpx.TransportError:
                    status = 0
                counts[status] = counts.get(status, 0) + 1
        return counts

    totals: dict[int, int] = {}
    with ThreadPoolExecutor(CLIENTS) as pool:
        for counts in pool.map(client, range(CLIENTS)):
            for status, n in counts.items():
                totals[status] = totals.get(status, 0) + n
    return totals


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.soak", description=__doc__)
    parser.add_argument("--requests", type=int, default=50_000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        request_bodies(folder / "bodies.jsonl")
        bodies = [line.encode() for line in (folder / "bodies.jsonl").read_text().splitlines()]
        settings = {"HYDRAREC_LOG_LEVEL": "warning", "PROMETHEUS_MULTIPROC_DIR": str(folder / "m")}
        with running_service(folder, **settings) as service:
            soak(service, bodies, 1000)  # warm-up
            start_rss, start = tree_rss_mib(service.process.pid)[0], time.perf_counter()
            statuses = soak(service, bodies, args.requests)
            seconds, end_rss = time.perf_counter() - start, tree_rss_mib(service.process.pid)[0]
    sent = sum(statuses.values())
    errors = sent - statuses.get(200, 0)
    text = (
        "# hydrarec soak\n\n"
        f"`make soak`, {time.strftime('%Y-%m-%d')}: {sent:,} requests (1 user x 100 candidates)"
        f" over {CLIENTS} connections in {seconds:.0f} s ({sent / seconds:,.0f}/s) against"
        " `python -m service` (one worker per core).\n\n"
        "| server RSS at start (MiB) | at end (MiB) | errors | statuses |\n|---:|---:|---:|---|\n"
        f"| {start_rss:.1f} | {end_rss:.1f} | {errors} | {json.dumps(statuses)} |\n"
    )
    RESULTS.write_text(text)
    sys.stdout.write(text)
    return 0 if errors == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
