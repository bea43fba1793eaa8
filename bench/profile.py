"""The server's profile under load (py-spy, sampling every worker): a flame graph SVG and the
frames where the samples fall, for `make bench`."""

from __future__ import annotations

import re
import subprocess
import sys
from collections import Counter
from pathlib import Path

PY_SPY = Path(sys.executable).with_name("py-spy")
RATE = 200  # samples per second and process
LINE = re.compile(r":\d+\)$")


def record(pid: int, seconds: int, output: Path, fmt: str) -> None:
    """py-spy on the server process and its workers for `seconds`."""
    subprocess.run(
        [
            str(PY_SPY),
            "record",
            "--pid",
            str(pid),
            "--subprocesses",
            "--nonblocking",
            "--duration",
            str(seconds),
            "--rate",
            str(RATE),
            "--format",
            fmt,
            "-o",
            str(output),
        ],
        check=True,
        capture_output=True,
        timeout=seconds + 60,
    )


def top_frames(raw: Path, n: int = 15) -> tuple[list[tuple[str, float, float]], int]:
    """([(function, % of samples in it or below, % of samples in it itself)], samples) from
    py-spy's raw (collapsed) output, by own samples; the process frames at the root are left
    out."""
    inclusive: Counter[str] = Counter()
    own: Counter[str] = Counter()
    total = 0
    for line in raw.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        count = int(count_text)
        # one entry per function: the line numbers of a frame are dropped
        frames = [LINE.sub(")", f) for f in stack.split(";") if not f.startswith("process ")]
        if not frames:
            continue
        total += count
        own[frames[-1]] += count
        for frame in set(frames):
            inclusive[frame] += count
    ranked = sorted(inclusive, key=lambda f: (-own[f], -inclusive[f]))[:n]
    return [(f, 100 * inclusive[f] / total, 100 * own[f] / total) for f in ranked], total
