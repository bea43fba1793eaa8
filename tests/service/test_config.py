"""Settings come from HYDRAREC_* variables, are validated once, and name what is wrong."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from service.config import Settings, SettingsError, get_settings


@pytest.fixture(autouse=True)
def fresh_settings() -> Iterator[None]:
    get_settings.cache_clear()
    yield
    get_settings.cache_clear()


def test_defaults_serve_the_committed_model_locally() -> None:
    settings = Settings()
    assert (settings.model_dir, settings.model_name, settings.model_version) == (
        Path("models"),
        "movielens",
        None,
    )
    assert (settings.host, settings.port, settings.max_candidates) == ("127.0.0.1", 8000, 1000)
    assert settings.workers >= 1
    assert settings.threads == max(1, len(os.sched_getaffinity(0)) // settings.workers)


def test_variables_are_read_once(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HYDRAREC_MAX_CANDIDATES", "50")
    monkeypatch.setenv("HYDRAREC_MODEL_VERSION", "3")
    first = get_settings()
    assert (first.max_candidates, first.model_version) == (50, 3)
    monkeypatch.setenv("HYDRAREC_MAX_CANDIDATES", "60")
    assert get_settings() is first


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("HYDRAREC_MAX_CANDIDATES", "0"),
        ("HYDRAREC_MAX_CANDIDATES", "many"),
        ("HYDRAREC_PORT", "70000"),
        ("HYDRAREC_MODEL_VERSION", "0"),
        ("HYDRAREC_MAX_BODY_BYTES", "10"),
        ("HYDRAREC_ORT_THREADS", "-1"),
        ("HYDRAREC_LOG_LEVEL", "loud"),
    ],
)
def test_bad_values_name_the_variable(
    monkeypatch: pytest.MonkeyPatch, name: str, value: str
) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(SettingsError, match=name):
        get_settings()


def test_a_misspelt_variable_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HYDRAREC_MAX_CANDIDATE", "10")
    with pytest.raises(SettingsError, match="HYDRAREC_MAX_CANDIDATE.*HYDRAREC_MAX_CANDIDATES"):
        get_settings()


def test_the_training_cache_variable_is_not_the_services(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HYDRAREC_CACHE_DIR", "/tmp/cache")
    assert get_settings().model_name == "movielens"


def test_workers_share_the_cores_between_their_onnxruntime_threads() -> None:
    n_cores = len(os.sched_getaffinity(0))
    assert Settings(workers=2, ort_threads=None).threads == max(1, n_cores // 2)
    assert Settings(workers=64).threads == 1
    assert Settings(workers=4, ort_threads=3).threads == 3


@pytest.fixture
def host_of_64_cores(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """A 64-core affinity mask and an empty fake cgroup folder to write quota files into."""
    monkeypatch.setattr(os, "sched_getaffinity", lambda _: set(range(64)), raising=False)
    monkeypatch.setattr("service.config.CGROUP_ROOT", tmp_path)
    return tmp_path


@pytest.mark.parametrize(
    ("files", "workers"),
    [
        ({"cpu.max": "200000 100000\n"}, 2),  # cgroup v2, docker run --cpus=2
        ({"cpu.max": "150000 100000\n"}, 2),  # 1.5 CPUs: rounded up
        ({"cpu.max": "max 100000\n"}, 64),  # no limit
        ({"cpu/cpu.cfs_quota_us": "300000\n", "cpu/cpu.cfs_period_us": "100000\n"}, 3),  # v1
        ({"cpu/cpu.cfs_quota_us": "-1\n", "cpu/cpu.cfs_period_us": "100000\n"}, 64),
        ({}, 64),  # no cgroup at all
    ],
)
def test_the_default_worker_count_respects_the_cgroup_cpu_quota(
    host_of_64_cores: Path, files: dict[str, str], workers: int
) -> None:
    for name, text in files.items():
        (host_of_64_cores / name).parent.mkdir(parents=True, exist_ok=True)
        (host_of_64_cores / name).write_text(text)
    assert Settings().workers == workers


def test_an_unreadable_quota_is_logged_and_ignored(
    host_of_64_cores: Path, caplog: pytest.LogCaptureFixture
) -> None:
    (host_of_64_cores / "cpu.max").write_text("lots\n")
    assert Settings().workers == 64
    assert "cannot read the cgroup CPU quota" in caplog.text


def test_without_an_affinity_mask_every_core_counts(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delattr(os, "sched_getaffinity", raising=False)  # as on macOS
    monkeypatch.setattr(os, "cpu_count", lambda: 6)
    monkeypatch.setattr("service.config.CGROUP_ROOT", Path("/nonexistent"))
    assert Settings().workers == 6
