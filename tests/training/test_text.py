"""The text encoder: the real all-MiniLM-L6-v2 out of its PyPI wheel, hash-checked, cached."""

from __future__ import annotations

import hashlib
import multiprocessing
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from training.data.raw import DataError
from training.data.text import ENCODERS, TextEmbedder, verify_files

pytestmark = pytest.mark.slow  # the wheel is downloaded once (83 MB) into the cache


def test_titles_are_embedded_by_the_real_encoder_then_read_from_the_cache(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    embedder = TextEmbedder("all-MiniLM-L6-v2")  # the shared cache: the wheel comes once
    monkeypatch.setattr(embedder, "cache", tmp_path / "embeddings.npz")  # fresh vectors
    titles = ["Star Wars (1977)", "Return of the Jedi (1983)", "Sense and Sensibility (1995)"]

    vectors = embedder.embed(titles)

    assert vectors.shape == (3, ENCODERS["all-MiniLM-L6-v2"].dim)
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    similarity = vectors @ vectors.T
    assert similarity[0, 1] > similarity[0, 2] + 0.1, "the two Star Wars films are closer"
    assert embedder.n_embedded == 3
    again = TextEmbedder("all-MiniLM-L6-v2")
    monkeypatch.setattr(again, "cache", tmp_path / "embeddings.npz")
    np.testing.assert_array_equal(again.embed(titles[::-1]), vectors[::-1])
    assert again.n_embedded == 0, "a rerun embeds nothing"


def test_the_pinned_hashes_match_the_unpacked_files() -> None:
    embedder = TextEmbedder("all-MiniLM-L6-v2")
    verify_files(embedder.folder, ENCODERS["all-MiniLM-L6-v2"].files)


def test_a_file_whose_sha256_does_not_match_is_refused_by_name(tmp_path: Path) -> None:
    (tmp_path / "1_Pooling").mkdir()
    files = {"config.json": b'{"a": 1}', "1_Pooling/config.json": b"{}"}
    for rel, data in files.items():
        (tmp_path / rel).write_bytes(data)
    pinned = {rel: hashlib.sha256(data).hexdigest() for rel, data in files.items()}
    verify_files(tmp_path, pinned)
    (tmp_path / "1_Pooling" / "config.json").write_bytes(b'{"pooling_mode_cls_token": true}')
    with pytest.raises(DataError, match=r"sha256 of 1_Pooling/config.json does not match"):
        verify_files(tmp_path, pinned)
    (tmp_path / "config.json").unlink()
    with pytest.raises(DataError, match="config.json is missing"):
        verify_files(tmp_path, pinned)


def test_an_unknown_encoder_is_refused(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="neither a known encoder"):
        TextEmbedder(str(tmp_path / "nowhere"))


def test_a_tampered_encoder_is_refused_before_it_is_loaded(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import shutil

    source = TextEmbedder("all-MiniLM-L6-v2").folder
    monkeypatch.setenv("HYDRAREC_CACHE_DIR", str(tmp_path))
    copy = tmp_path / "encoders" / "all-MiniLM-L6-v2"
    shutil.copytree(source, copy)
    with (copy / "tokenizer_config.json").open("a") as f:
        f.write(" ")
    with pytest.raises(DataError, match="sha256 of tokenizer_config.json does not match"):
        TextEmbedder("all-MiniLM-L6-v2").embed(["a title nobody embedded before"])


def _unpack_and_cache(barrier: Any, n: int) -> None:
    """One of several processes: unpack the encoder and write the vector cache at once."""
    barrier.wait()
    embedder = TextEmbedder("all-MiniLM-L6-v2")
    verify_files(embedder.folder, ENCODERS["all-MiniLM-L6-v2"].files)
    for _ in range(20):
        embedder._write_cache({f"text {n}": np.full(4, n, dtype=np.float32)})
        assert embedder._read_cache(), "the cache read back whole"


def test_runs_started_together_share_one_cache_without_tripping_over_each_other(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    source = ENCODERS["all-MiniLM-L6-v2"]
    wheel = TextEmbedder("all-MiniLM-L6-v2").folder.parents[1] / source.wheel  # downloaded
    monkeypatch.setenv("HYDRAREC_CACHE_DIR", str(tmp_path))
    (tmp_path / source.wheel).symlink_to(wheel)  # a fresh cache that holds only the wheel
    context = multiprocessing.get_context("spawn")
    barrier = context.Barrier(4)
    workers = [context.Process(target=_unpack_and_cache, args=(barrier, n)) for n in range(4)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=120)
    assert [w.exitcode for w in workers] == [0, 0, 0, 0]
    verify_files(tmp_path / "encoders" / "all-MiniLM-L6-v2", source.files)
    assert sorted(p.name for p in (tmp_path / "encoders").iterdir()) == ["all-MiniLM-L6-v2"]
    assert [p.name for p in (tmp_path / "embeddings").iterdir() if p.name.startswith(".")] == []
