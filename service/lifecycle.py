"""The served model and how it is replaced without downtime.

Training publishes a new version by renaming a complete folder into the repository; each worker
polls the repository (HYDRAREC_MODEL_POLL_SECONDS) and `POST /admin/reload` checks at once. A
newer version is loaded, verified and warmed up beside the one being served, then swapped in by
replacing one reference: requests in flight finish on the predictor they started with, and every
response names the version that computed it.

A version that fails (anything during find, verify, session creation or warm-up, onnxruntime's
own exceptions included) is rejected with its reason, counted, listed in /v1/models, and tried
again only when its content changes (`service.repository.fingerprint`): a version copied in
file by file is served once it is complete. Unless a version is pinned, the highest version that
verifies is served: a bad newest version neither stops the start-up nor the one serving.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass

from starlette.concurrency import run_in_threadpool

from service.artifact import ArtifactError
from service.config import Settings
from service.metrics import Metrics
from service.predictor import Predictor
from service.repository import fingerprint, list_versions

logger = logging.getLogger("hydrarec")


@dataclass(frozen=True)
class Reload:
    """What a reload check did."""

    version: int  # the version served afterwards
    reloaded: bool


@dataclass(frozen=True)
class Rejection:
    """A version that could not be served, and the content it had then."""

    fingerprint: str
    reason: str


def load_predictor(settings: Settings, metrics: Metrics | None, version: int) -> Predictor:
    """`Predictor.load`, with every failure an ArtifactError naming the version.

    Raises:
        ArtifactError: the version cannot be served, whatever the cause.
    """
    try:
        return Predictor.load(settings, metrics, version)
    except ArtifactError:
        raise
    except Exception as e:  # onnxruntime's own errors, a file gone mid-read, ...
        where = settings.model_dir / settings.model_name / str(version)
        raise ArtifactError(f"{where}: cannot be loaded: {type(e).__name__}: {e}") from None


def candidate_versions(settings: Settings, above: int = 0) -> list[int]:
    """Versions to try, best first: the pinned one, else every version above `above`, highest
    first."""
    if settings.model_version is not None:
        return [settings.model_version]
    versions = list_versions(settings.model_dir / settings.model_name)
    return [v for v in reversed(versions) if v > above]


def first_servable(settings: Settings) -> Predictor:
    """The predictor a worker will start with (`python -m service` checks it before any port
    is opened; silent: the workers log and count what they reject).

    Raises:
        ArtifactError: no version can be served, every reason named.
    """
    reasons = []
    for version in candidate_versions(settings):
        try:
            return load_predictor(settings, None, version)
        except ArtifactError as e:
            reasons.append(str(e))
    raise ArtifactError(_none_servable(settings, reasons))


def _none_servable(settings: Settings, reasons: list[str]) -> str:
    folder = settings.model_dir / settings.model_name
    return "; ".join(reasons) or f"no model versions in {folder} (expected numeric folders)"


class ModelHolder:
    """Holds the current predictor; loads newer versions and swaps them in."""

    def __init__(self, settings: Settings, metrics: Metrics) -> None:
        self.settings = settings
        self.metrics = metrics
        self.current: Predictor | None = None
        self.rejected: dict[int, Rejection] = {}  # version -> why, and its content then
        self._lock = asyncio.Lock()
        self._poll_error = ""  # the last unexpected poll failure, logged once

    async def start(self) -> Predictor:
        """Serve the pinned version, else the highest version that verifies.

        Raises:
            ArtifactError: no version can be served (every reason named).
        """
        async with self._lock:
            reasons = []
            for version in candidate_versions(self.settings):
                try:
                    return await self._try(version)
                except ArtifactError as e:
                    reasons.append(str(e))
            raise ArtifactError(_none_servable(self.settings, reasons))

    async def refresh(self) -> Reload:
        """Serve the highest version newer than the current one that verifies, if any.

        Raises:
            ArtifactError: there are newer versions and none of them can be served (also when
                they were rejected before and are unchanged since); the current one keeps
                serving.
        """
        async with self._lock:
            assert self.current is not None, "refresh before the first load"
            served = self.current.artifact.manifest.version
            pinned = self.settings.model_version is not None
            newer = [] if pinned else candidate_versions(self.settings, above=served)
            reasons = []
            for version in newer:
                try:
                    await self._try(version)
                except ArtifactError as e:
                    reasons.append(str(e))
                    continue
                return Reload(version, reloaded=True)
            if reasons:
                raise ArtifactError(f"{'; '.join(reasons)}; still serving version {served}")
            return Reload(served, reloaded=False)

    async def _try(self, version: int) -> Predictor:
        """Load and swap in one version, unless it was rejected with the content it has now.

        Raises:
            ArtifactError: it cannot be served (a new rejection is logged and counted once).
        """
        content = fingerprint(self.settings.model_dir / self.settings.model_name / str(version))
        earlier = self.rejected.get(version)
        if earlier is not None and earlier.fingerprint == content:
            raise ArtifactError(
                f"version {version} was rejected and has not changed since: {earlier.reason}"
            )
        start = time.perf_counter()
        try:
            predictor = await run_in_threadpool(
                load_predictor, self.settings, self.metrics, version
            )
        except ArtifactError as e:
            self.rejected[version] = Rejection(content, str(e))
            self.metrics.model_loads.labels("failure").inc()
            logger.error("rejected version %s: %s", version, e)
            raise
        self.rejected.pop(version, None)
        self.metrics.model_loads.labels("success").inc()
        self.metrics.model_load_duration.set(time.perf_counter() - start)
        self._swap(predictor)
        return predictor

    def _swap(self, predictor: Predictor) -> None:
        self.metrics.start_model(predictor.ref, [t.name for t in predictor.artifact.manifest.tasks])
        previous, self.current = self.current, predictor  # the swap: one reference
        if previous is not None:
            self.metrics.model_info.labels(previous.ref["name"], previous.ref["version"]).set(0)
        self.metrics.model_info.labels(predictor.ref["name"], predictor.ref["version"]).set(1)
        logger.info("serving %s version %s", predictor.ref["name"], predictor.ref["version"])

    async def poll(self, every_s: float) -> None:
        """Check for a newer version every `every_s` seconds, until cancelled."""
        while True:
            await asyncio.sleep(every_s)
            try:
                await self.refresh()
            except ArtifactError:
                pass  # each rejection was logged once, when it happened
            except Exception as e:  # the poller must outlive any surprise; say it once
                if str(e) != self._poll_error:
                    logger.error("model poll failed, polling goes on: %s: %s", type(e).__name__, e)
                self._poll_error = str(e)
