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
