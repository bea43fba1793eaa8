"""The served model and how it is replaced without downtime.

Training publishes a new version by renaming a complete folder into the repository; each worker
polls the repository (HYDRAREC_MODEL_POLL_SECONDS) and `POST /admin/reload` checks at once. A
newer version is loaded, verified and warmed up beside the one being served, then swapped in by
replacing one reference: requests in flight finish on the predictor they started with, and every
response names the version that computed it. A version that fails is rejected with its reason,
counted, and not tried again until its manifest changes; the old one keeps serving.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from pathlib import Path

from starlette.concurrency import run_in_threadpool

from service.artifact import MANIFEST_FILE, ArtifactError, list_versions
from service.config import Settings
from service.metrics import Metrics
from service.predictor import Predictor

logger = logging.getLogger("hydrarec")


@dataclass(frozen=True)
class Reload:
    """What a reload check did."""

    version: int  # the version served afterwards
    reloaded: bool


class ModelHolder:
    """Holds the current predictor; loads newer versions and swaps them in."""

    def __init__(self, settings: Settings, metrics: Metrics) -> None:
        self.settings = settings
        self.metrics = metrics
        self.current: Predictor | None = None
        self._rejected: dict[int, float | None] = {}  # version -> manifest mtime when rejected
        self._lock = asyncio.Lock()

    async def load(self, version: int | None = None) -> Predictor:
        """Load, verify and warm up a version (the configured one by default), then serve it.

        Raises:
            ArtifactError: the version cannot be served; what was served before still is.
        """
        start = time.perf_counter()
        try:
            predictor = await run_in_threadpool(
                Predictor.load, self.settings, self.metrics, version
            )
        except ArtifactError:
            self.metrics.model_loads.labels("failure").inc()
            raise
        self.metrics.model_loads.labels("success").inc()
        self.metrics.model_load_duration.set(time.perf_counter() - start)
        self.metrics.start_tasks([t.name for t in predictor.artifact.manifest.tasks])
        previous, self.current = self.current, predictor  # the swap: one reference
        if previous is not None:
            self.metrics.model_info.labels(previous.ref["name"], previous.ref["version"]).set(0)
        self.metrics.model_info.labels(predictor.ref["name"], predictor.ref["version"]).set(1)
        logger.info("serving %s version %s", predictor.ref["name"], predictor.ref["version"])
        return predictor

    async def refresh(self) -> Reload:
        """Serve the highest version if it is newer than the current one.

        Raises:
            ArtifactError: the newest version cannot be served (also when rejected before and
                unchanged since); the current one keeps serving.
        """
        async with self._lock:
            assert self.current is not None, "refresh before the first load"
            served = self.current.artifact.manifest.version
            folder = self.settings.model_dir / self.settings.model_name
            versions = [] if self.settings.model_version else list_versions(folder)
            if not versions or versions[-1] <= served:
                return Reload(served, reloaded=False)
            newest = versions[-1]
            stamp = _manifest_mtime(folder / str(newest))
            if newest in self._rejected and self._rejected[newest] == stamp:
                raise ArtifactError(f"version {newest} was rejected and has not changed since")
            try:
                await self.load(newest)
            except ArtifactError as e:
                self._rejected[newest] = stamp
                logger.error("rejected version %s, still serving %s: %s", newest, served, e)
                raise
            return Reload(newest, reloaded=True)

    async def poll(self, every_s: float) -> None:
        """Check for a newer version every `every_s` seconds, until cancelled."""
        while True:
            await asyncio.sleep(every_s)
            try:
                await self.refresh()
            except ArtifactError:
                pass  # logged once by refresh; the current version keeps serving
            except Exception:  # the poller must outlive any surprise; say what it was
                logger.exception("model poll failed; polling goes on")


def _manifest_mtime(folder: Path) -> float | None:
    try:
        return (folder / MANIFEST_FILE).stat().st_mtime
    except OSError:
        return None
