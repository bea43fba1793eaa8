"""`python -m service`: check the settings and the model, then run uvicorn with N workers.

Bad settings, no version that can be served (or a pinned one that cannot), or a port already in
use end here, with one `error:` line and exit status 2, before any port is opened. A worker that
fails to start afterwards ends the server with status 3.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import tempfile
from pathlib import Path
from types import FrameType

from service.artifact import ArtifactError
from service.config import SettingsError, get_settings
from service.lifecycle import first_servable
from service.metrics import MULTIPROC_ENV
from service.server import PortUnavailable, serve

EXIT_CONFIG = 2


def main() -> int:
    """Run the service until SIGINT/SIGTERM; the exit status says how it ended."""
    try:
        settings = get_settings()
        first_servable(settings)  # a bad newest version is skipped (the workers log it)
    except (SettingsError, ArtifactError) as e:
        sys.stderr.write(f"error: {e}\n")
        return EXIT_CONFIG
    logging.basicConfig(
        level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    # uvicorn shuts down gracefully on SIGTERM, then re-raises the signal to the handler that was
    # there before it; this one turns that into exit status 0 (a requested, clean stop).
    signal.signal(signal.SIGTERM, _stopped)
    try:
        if MULTIPROC_ENV in os.environ:
            prepare_multiprocess_metrics(Path(os.environ[MULTIPROC_ENV]))
        elif settings.workers > 1:
            with tempfile.TemporaryDirectory(prefix="hydrarec-metrics-") as folder:
                prepare_multiprocess_metrics(Path(folder))
                return serve(settings)
        return serve(settings)
    except PortUnavailable as e:
        sys.stderr.write(f"error: {e}\n")
        return EXIT_CONFIG


def prepare_multiprocess_metrics(folder: Path) -> None:
    """Give the workers one empty metrics folder, named in their environment before they start.

    Each worker writes its metrics to files there and `/metrics` sums them (prometheus_client
    multiprocess mode). Left-over files of a previous run would add to this run's counts, so the
    folder is emptied. PROMETHEUS_MULTIPROC_DIR chooses it (the image sets it); else the caller
    passes a temporary folder, removed when the server stops.
    """
    folder.mkdir(parents=True, exist_ok=True)
    for stale in folder.glob("*.db"):
        stale.unlink()
    os.environ[MULTIPROC_ENV] = str(folder)


def _stopped(signum: int, frame: FrameType | None) -> None:
    del signum, frame
    sys.exit(0)


if __name__ == "__main__":
    sys.exit(main())
