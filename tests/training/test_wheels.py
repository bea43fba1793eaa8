"""Wheels fetched with the real pip into the cache: whole, or not at all."""

from __future__ import annotations

import zipfile
from pathlib import Path

import pytest

from training.data.raw import DataError
from training.data.wheels import fetch_wheel

WHEEL = "six-1.16.0-py2.py3-none-any.whl"  # 11 kB from PyPI


def test_a_wheel_lands_in_the_cache_whole_and_alone(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HYDRAREC_CACHE_DIR", str(tmp_path))

    path = fetch_wheel("six==1.16.0", WHEEL, "the test")

    assert path == tmp_path / WHEEL
    assert zipfile.ZipFile(path).testzip() is None
    assert [p.name for p in tmp_path.iterdir()] == [WHEEL], "no download folder left behind"
    assert fetch_wheel("six==1.16.0", WHEEL, "the test") == path  # from the cache


def test_a_wheel_pip_does_not_bring_is_refused_and_leaves_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HYDRAREC_CACHE_DIR", str(tmp_path))
    with pytest.raises(DataError, match=r"could not download six==1.16.0 with pip \(needed for"):
        fetch_wheel("six==1.16.0", "six-0.0-py3-none-any.whl", "the test")
    assert list(tmp_path.iterdir()) == []
