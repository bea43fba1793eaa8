"""Run `python -m training ...` and append this process's peak RSS (ru_maxrss) to a file
(imports nothing of the project first, so the figure is the command's own).

`torchrun ... bench/rss.py train ...` runs it in every rank, so each rank reports its own peak.
"""

from __future__ import annotations

import json
import os
import resource
import runpy
import sys

if __name__ == "__main__":
    sys.argv = ["training", *sys.argv[1:]]
    try:
        runpy.run_module("training", run_name="__main__", alter_sys=True)
    finally:
        peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB (Linux)
        line = {"rank": int(os.environ.get("RANK", "0")), "peak_rss_mib": peak_kib / 1024}
        with open(os.environ["HYDRAREC_RSS_FILE"], "a", encoding="utf-8") as out:
            out.write(json.dumps(line) + "\n")
