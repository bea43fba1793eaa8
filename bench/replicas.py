"""`python -m bench.replicas` (`make bench-replicas`): hydrarec behind a real nginx.

wrk (8 connections, `--seconds` a run, median of `--repeats`) against: one replica with 2
workers, direct; the same replica through nginx (the cost of the hop); two replicas of 1 worker
each through nginx (the same two worker processes, spread over two replicas). Then a replica is
SIGKILLed under load (3 Python clients through nginx) and restarted: failed requests, and how
long it takes from the kill until it serves again. Everything shares this machine's cores.
Written to bench/replicas.md.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path

from bench.wrk import load_script, warm_up, wrk
from harness.nginx import running_nginx
from harness.processes import free_port, wait_until
from harness.replicas import kill, load, replica, served

RESULTS = Path(__file__).with_name("replicas.md")
LIMIT = 200_000  # requests at most in the kill run (about a minute here)


def throughput(url: str, script: Path, seconds: int, repeats: int) -> tuple[float, float, int]:
    """(median req/s, median p99 s, errors over all runs) of POST /predict at `url`."""
    warm_up(f"{url}/predict", script)
    runs = [wrk(f"{url}/predict", script, 8, seconds) for _ in range(repeats)]
    return (
        statistics.median(r.requests_per_second for r in runs),
        statistics.median(r.p99_s for r in runs),
        sum(r.errors for r in runs),
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as scratch:
        folder = Path(scratch)
        script = load_script(folder)
        with ExitStack() as stack:
            port = free_port()
            one = replica(stack, folder, port, HYDRAREC_WORKERS="2")
            (folder / "one").mkdir()
            proxy = stack.enter_context(running_nginx(folder / "one", [port]))
            for name, url in (
                ("1 replica x 2 workers, direct", one.url),
                ("1 replica x 2 workers, through nginx", proxy),
            ):
                rows.append((name, *throughput(url, script, args.seconds, args.repeats)))
                sys.stdout.write(f"{rows[-1]}\n")
        with ExitStack() as stack:
            ports = [free_port(), free_port()]
            replicas = [replica(stack, folder, p) for p in ports]
            (folder / "two").mkdir()
            proxy = stack.enter_context(running_nginx(folder / "two", ports))
            rows.append(
                (
                    "2 replicas x 1 worker, through nginx",
                    *throughput(proxy, script, args.seconds, args.repeats),
                )
            )
            sys.stdout.write(f"{rows[-1]}\n")
            with load(proxy, limit=LIMIT) as running:
                time.sleep(2)
                before = len(running.statuses)
                killed = time.monotonic()
                kill(replicas[0])
                again = replica(stack, folder, ports[0])
                ready_s = time.monotonic() - killed
                wait_until(lambda: served(again) > 0, "the restarted replica never served", 60)
                rejoined_s = time.monotonic() - killed
                time.sleep(2)
            during = len(running.statuses) - before
            failed = running.failed
    table = ["| setting | req/s | p99 | errors |", "|---|---:|---:|---:|"]
    table += [f"| {n} | {r:,.0f} | {p * 1000:.0f} ms | {e} |" for n, r, p, e in rows]
    text = "\n".join(
        [
            "# Replicas behind nginx",
            "",
            f"`python -m bench.replicas --seconds={args.seconds} --repeats={args.repeats}` on "
            f"{os.cpu_count()} cores ({platform.machine()}), the default model, bodies of 20 "
            "history items and 100 candidates, wrk with 8 connections; nginx (Debian "
            "1.22, docker/nginx's template, 1 worker process), the replicas and wrk all share "
            "the same cores.",
            "",
            *table,
            "",
            f"A replica SIGKILLed under load (3 clients through nginx) and restarted at once: "
            f"{failed} failed of {during} requests sent from the kill on; the new process was "
            f"ready {ready_s:.1f} s after the kill and served again {rejoined_s:.1f} s after it "
            "(nginx tries a failed server again after fail_timeout, 2 s).",
            "",
        ]
    )
    RESULTS.write_text(text, encoding="utf-8")
    sys.stdout.write(text)


if __name__ == "__main__":
    main()
