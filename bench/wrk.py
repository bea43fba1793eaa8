"""Load with wrk: the request bodies every HTTP run sends, the Lua script that cycles through
them, and a run's figures parsed from wrk's report."""

from __future__ import annotations

import json
import re
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from harness.processes import REPOSITORY
from service.repository import load_artifact

N_CANDIDATES = 100
N_HISTORY = 20
BODIES_FILE = "bodies.jsonl"

SCRIPT = """
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
        picked = rng.choice(len(items), N_HISTORY + N_CANDIDATES, replace=False)
        body = {
            "user_id": users[int(rng.integers(len(users)))],
            "history": [items[i] for i in picked[:N_HISTORY]],
            "candidates": [items[i] for i in picked[N_HISTORY:]],
        }
        lines.append(json.dumps(body))
    path.write_text("\n".join(lines) + "\n")


def load_script(folder: Path) -> Path:
    """The bodies (BODIES_FILE) and the wrk script that posts them, written to `folder`; the
    script's path."""
    bodies, script = folder / BODIES_FILE, folder / "post.lua"
    request_bodies(bodies)
    script.write_text(SCRIPT % bodies)
    return script


def _seconds(text: str) -> float:
    value, unit = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text).groups()  # type: ignore[union-attr]
    return float(value) * UNITS[unit]


def wrk_command(url: str, script: Path, connections: int, seconds: int) -> list[str]:
    return ["wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "--latency", "-s", str(script), url]


def wrk(url: str, script: Path, connections: int, seconds: int) -> WrkRun:
    """One run against `url` (the /predict address)."""
    out = subprocess.run(
        wrk_command(url, script, connections, seconds), capture_output=True, text=True, check=True
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


def median_run(runs: list[WrkRun]) -> WrkRun:
    """The run with the median requests/s."""
    return sorted(runs, key=lambda r: r.requests_per_second)[len(runs) // 2]


def run_cell(run: WrkRun) -> str:
    """A report's cell for one run: requests/s, p50, p99 (and its errors, if any)."""
    errors = f" ({run.errors} errors)" if run.errors else ""
    return (
        f"{run.requests_per_second:,.0f}, {run.p50_s * 1e3:.2f} ms, {run.p99_s * 1e3:.2f} ms"
        + errors
    )


def warm_up(url: str, script: Path) -> None:
    wrk(url, script, 8, 1)


def interleaved(
    urls: dict[str, str],
    script: Path,
    connections: tuple[int, ...],
    seconds: int,
    repeats: int,
    each_round: Callable[[], None] = lambda: None,
) -> dict[str, dict[int, list[WrkRun]]]:
    """wrk runs of every server (name -> /predict address), by connection count: each warmed up,
    then at each connection count one run of each server in turn and `each_round()`, `repeats`
    times, so that a change in the machine's speed during the benchmark hits them all alike."""
    for url in urls.values():
        warm_up(url, script)
    out: dict[str, dict[int, list[WrkRun]]] = {name: {c: [] for c in connections} for name in urls}
    for c in connections:
        for _ in range(repeats):
            for name, url in urls.items():
                out[name][c].append(wrk(url, script, c, seconds))
            each_round()
    return out


MODES = {
    "dynamic batching on": {"HYDRAREC_BATCH_MAX_CANDIDATES": "2000"},
    "dynamic batching off": {"HYDRAREC_BATCH_MAX_CANDIDATES": "0"},
}
DEFAULT_MODE = "dynamic batching on"  # what the service does without settings (service/config.py)


@dataclass(frozen=True)
class Served:
    """The wrk runs of one server setting and where its requests' time went."""

    runs: dict[int, list[WrkRun]]  # by connection count
    rss_mib: tuple[float, int]  # the server's resident memory after the runs, its processes
    costs: dict[str, float]  # mean seconds per request: each stage, the whole handler (hydrarec)
    batch_size: float | None  # mean requests per session.run (hydrarec, batching on)
