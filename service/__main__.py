"""`python -m service`: check the settings and the model, then run uvicorn.

Bad settings or a missing, tampered or incompatible artifact end here, with one `error:` line
and exit status 2, before any port is opened.
"""

from __future__ import annotations

import logging
import signal
import sys
from types import FrameType

import uvicorn

from service.artifact import ArtifactError
from service.config import SettingsError, get_settings
from service.predictor import Predictor

EXIT_CONFIG = 2


def main() -> int:
    """Run the service until SIGINT/SIGTERM; the exit status says how it ended."""
    try:
        settings = get_settings()
        Predictor.load(settings)
    except (SettingsError, ArtifactError) as e:
        sys.stderr.write(f"error: {e}\n")
        return EXIT_CONFIG
    # uvicorn shuts down gracefully on SIGTERM, then re-raises the signal to the handler that was
    # there before it; this one turns that into exit status 0 (a requested, clean stop).
    signal.signal(signal.SIGTERM, _stopped)
    logging.basicConfig(
        level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    uvicorn.run(
        "service.main:create_app",
        factory=True,
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level,
    )
    return 0


def _stopped(signum: int, frame: FrameType | None) -> None:
    del signum, frame
    sys.exit(0)


if __name__ == "__main__":
    sys.exit(main())
