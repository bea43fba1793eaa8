"""Resident memory of a server: its launcher and every process under it (uvicorn's workers;
BentoML's, which run in sessions of their own), read from /proc."""

from __future__ import annotations

from pathlib import Path


def _parents() -> dict[int, int]:
    """pid -> parent pid of every process now."""
    out = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()  # after "pid (comm)": state, ppid
        except (FileNotFoundError, ProcessLookupError):
            continue  # exited meanwhile
        out[int(stat.parent.name)] = int(fields[1])
    return out


def tree(pid: int) -> list[int]:
    """`pid` and its descendants."""
    parents = _parents()
    found, frontier = [pid], [pid]
    while frontier:
        frontier = [child for child, parent in parents.items() if parent in frontier]
        found += frontier
    return found


def tree_rss_mib(pid: int) -> tuple[float, int]:
    """Total VmRSS in MiB of `pid` and its descendants, and their number."""
    total_kib, n = 0, 0
    for member in tree(pid):
        try:
            status = Path(f"/proc/{member}/status").read_text()
        except (FileNotFoundError, ProcessLookupError):
            continue
        for line in status.splitlines():
            if line.startswith("VmRSS:"):
                total_kib += int(line.split()[1])
                n += 1
    return total_kib / 1024, n
