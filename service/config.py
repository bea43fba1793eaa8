"""Service settings: environment variables with the `HYDRAREC_` prefix, validated once.

`get_settings()` reads the environment once per process; `create_app(settings)` takes a
`Settings` built directly, so tests never patch the environment before an import.
"""

from __future__ import annotations

import logging
import math
import os
from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict

ENV_PREFIX = "HYDRAREC_"
DEFAULT_STORE_URL = "sqlite:///state/events.db"
SUPERVISOR_PID = "HYDRAREC_SUPERVISOR_PID"  # set by the launcher for its workers
OTHER_VARIABLES = {"HYDRAREC_CACHE_DIR", SUPERVISOR_PID}  # training's data cache; internal


class SettingsError(Exception):
    """An environment variable has a value the service cannot run with."""


CGROUP_ROOT = Path("/sys/fs/cgroup")
logger = logging.getLogger("hydrarec")


def cores() -> int:
    """CPU cores this process may use: the affinity mask (a container's cpuset; macOS has none,
    so every core there), capped by a cgroup CPU quota rounded up (a container limited to 2
    CPUs on a 64-core host gets 2, `docker run --cpus` and Kubernetes limits set it)."""
    affinity = getattr(os, "sched_getaffinity", None)
    available = len(affinity(0)) if affinity is not None else (os.cpu_count() or 1)
    quota = cgroup_cpu_quota(CGROUP_ROOT)
    return max(1, min(available, math.ceil(quota)) if quota is not None else available)


def cgroup_cpu_quota(root: Path) -> float | None:
    """The CPU quota in cores (`cpu.max` under cgroup v2, `cpu.cfs_quota_us` / `cpu.cfs_period_us`
    under v1), or None when there is none or it cannot be read (not Linux, no cgroup mounted)."""
    v2 = root / "cpu.max"
    v1 = [root / "cpu" / name for name in ("cpu.cfs_quota_us", "cpu.cfs_period_us")]
    try:
        if v2.is_file():
            quota, period = v2.read_text().split()[:2]
        elif all(p.is_file() for p in v1):
            quota, period = (p.read_text().strip() for p in v1)
        else:
            return None
        if quota == "max" or int(quota) <= 0:  # v2 "max", v1 "-1": no limit
            return None
        return int(quota) / int(period)
    except (OSError, ValueError, ZeroDivisionError) as e:
        logger.warning("cannot read the cgroup CPU quota under %s (%s); using every core", root, e)
        return None


class Settings(BaseSettings):
    """Every knob of the service; each field is `HYDRAREC_<FIELD>` in the environment."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, frozen=True, extra="forbid")

    model_dir: Path = Field(
        default=Path("models"), description="model repository: <dir>/<name>/<version>/"
    )
    model_name: str = Field(default="movielens", min_length=1, description="model to serve")
    model_version: int | None = Field(
        default=None, ge=1, description="version to serve; unset = the highest numeric folder"
    )
    model_poll_seconds: float = Field(
        default=10.0,
        ge=0.0,
        le=86_400,
        description="how often each worker looks for a newer version (0 = never)",
    )
    host: str = Field(default="127.0.0.1", min_length=1, description="address to listen on")
    port: int = Field(default=8000, ge=1, le=65535, description="TCP port")
    max_candidates: int = Field(
        default=1000, ge=1, le=100_000, description="most candidates one request may carry"
    )
    retrieve: int = Field(
        default=100,
        ge=1,
        le=10_000,
        description="recommend mode: items retrieved from the index for the full model to "
        "re-rank (on MovieLens-100K, 100 already give the full model's figures: docs/quality.md)",
    )
    max_exclude: int = Field(
        default=5000,
        ge=0,
        le=1_000_000,
        description="recommend mode: most ids one request's `exclude` list may carry",
    )
    index_exact_max: int = Field(
        default=100_000,
        ge=0,
        description="catalogues up to this many items are searched exactly; larger ones "
        "through an inverted-file (IVF) index",
    )
    index_nlist: int = Field(
        default=0,
        ge=0,
        le=1_000_000,
        description="IVF: clusters the catalogue is split into (0 = sqrt(items))",
    )
    index_nprobe: int = Field(
        default=32,
        ge=1,
        le=1_000_000,
        description="IVF: clusters searched per request; more finds more of the exact top "
        "items, slower",
    )
    explain_history: int = Field(
        default=50,
        ge=1,
        le=1000,
        description='`"explain": true`: history items tried, the most recent distinct ones '
        "the model reads; each is one more user row of the explained request's graph run",
    )
    explain_top: int = Field(
        default=5,
        ge=1,
        le=100,
        description='`"explain": true`: history items returned per task, the largest changes first',
    )
    explain_max_items: int = Field(
        default=20,
        ge=1,
        le=1000,
        description='`"explain": true`: most ranked items one explained request may return '
        "(its top_k); each is scored once per tried history item",
    )
    store_url: str = Field(
        default=DEFAULT_STORE_URL,
        pattern=r"^(sqlite:///.+|redis://.+)$",
        description="where users' events are kept: sqlite:///PATH (a file the workers share; "
        "relative to the working directory, sqlite:////abs/path for an absolute one) or "
        "redis://HOST:PORT/DB (shared by replicas)",
    )
    max_events: int = Field(
        default=1000, ge=1, le=100_000, description="most events one POST /events may carry"
    )
    max_body_bytes: int = Field(
        default=1_048_576, ge=1024, description="larger request bodies get 413 before being read"
    )
    workers: int = Field(
        default_factory=cores, ge=1, le=64, description="server processes (default: one per core)"
    )
    ort_threads: int | None = Field(
        default=None,
        ge=1,
        le=256,
        description="ONNX Runtime intra-op threads per worker (default: cores / workers)",
    )
    batch_max_candidates: int = Field(
        default=2000,
        ge=0,
        le=1_000_000,
        description="dynamic batching: most candidates in one session.run (0 = off); a lone "
        "request runs at once, concurrent ones share a run (bench/results.md)",
    )
    batch_max_delay_ms: float = Field(
        default=0.0,
        ge=0.0,
        le=1000.0,
        description="after a batch of several requests, how long the next may wait to fill "
        "(after a lone request nothing waits)",
    )
    body_timeout_seconds: float = Field(
        default=10.0,
        gt=0,
        le=600,
        description="a request whose whole body has not arrived this long after it began "
        "gets 408 (the body is read before an admission slot is taken)",
    )
    max_in_flight: int = Field(
        default=64,
        ge=1,
        le=10_000,
        description="/predict requests one worker answers at once; more get 503 at once",
    )
    api_key: SecretStr | None = Field(
        default=None,
        min_length=16,
        description="when set, /predict, /events and /v1/models need it (X-API-Key or Bearer)",
    )
    graceful_shutdown_seconds: int = Field(
        default=30,
        gt=0,
        le=3600,
        description="on SIGTERM, how long requests in flight may take to finish",
    )
    retry_after_seconds: int = Field(
        default=1, ge=1, le=3600, description="Retry-After of a 503 while not ready"
    )
    log_level: Literal["debug", "info", "warning", "error"] = Field(
        default="info", description="log level of the service and uvicorn"
    )
    access_log: bool = Field(
        default=False,
        description="uvicorn's access log: a line per request (client address, method, path, "
        "status); off by default, Prometheus counts requests and a line each cost ~5% of a "
        "request's CPU",
    )

    @property
    def threads(self) -> int:
        """ONNX Runtime intra-op threads of one worker. ORT's own default is every core per
        session, so N workers would each start that many threads and fight over the cores."""
        return self.ort_threads or max(1, cores() // self.workers)


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The settings of this process, read from the environment once.

    Raises:
        SettingsError: naming each `HYDRAREC_` variable that is wrong and why, including
            unknown ones (a misspelt variable would otherwise be silently ignored).
    """
    known = {f"{ENV_PREFIX}{name.upper()}" for name in Settings.model_fields}
    unknown = sorted(
        k for k in os.environ if k.startswith(ENV_PREFIX) and k not in known | OTHER_VARIABLES
    )
    if unknown:
        raise SettingsError(
            f"unknown setting(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}"
        )
    try:
        return Settings()
    except ValidationError as e:
        problems = "; ".join(
            f"{ENV_PREFIX}{'_'.join(str(p) for p in err['loc']).upper()}: {err['msg']}"
            for err in e.errors()
        )
        raise SettingsError(f"invalid settings: {problems}") from None
