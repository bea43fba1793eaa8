"""Recommend mode's first stage: an index over every catalogue item's vector (faiss).

The artifact's item vectors (service.artifact.RetrievalSpec) are read, checked and indexed when
the version is loaded: exact inner product up to HYDRAREC_INDEX_EXACT_MAX items (one matrix
product per request: at MovieLens size, microseconds), an inverted file past it (IVF: the
vectors clustered by k-means into `nlist` lists, a request searching the `nprobe` lists whose
centroids score highest; its recall of the exact top R is measured in `make bench`).

Inner product is not a distance, and items' norms differ (popular items' vectors are longer), so
the IVF index holds each vector with one more coordinate, sqrt(M^2 - |x|^2) (M the largest norm),
and a query gets a 0 there: every item then lies on the sphere of radius M, inner products are
unchanged, and clusters by direction (spherical k-means) hold the best items together (Bachrach
et al., RecSys 2014). On vectors spread like the default model's, it raised the IVF's recall of
the exact top 100 at a million items from 0.66 to 0.99 (nprobe 32). IVF rather than HNSW: HNSW
took 94-196 s to build a million 64-d items on 2 cores, IVF 3 s (docs/performance.md). Index
position i is line i of the item vocabulary, so item index = FIRST_ID + position.
"""

from __future__ import annotations

from collections.abc import Set
from dataclasses import dataclass
from pathlib import Path

import faiss
import numpy as np

from service.artifact import FIRST_ID, Artifact, ArtifactError

SAMPLE_PER_LIST = 40  # k-means trains on this many vectors per IVF list (faiss asks for 39)


@dataclass(frozen=True)
class IndexSettings:
    """How the index is built and searched (HYDRAREC_INDEX_*)."""

    exact_max: int  # most items searched exactly; past it, IVF
    nlist: int  # IVF lists; 0: sqrt(items)
    nprobe: int  # IVF lists searched per request
    threads: int  # faiss's OpenMP threads (the build; a single query runs on one)
    seed: int = 0  # k-means's sample and initialisation


class Retriever:
    """The item vectors of one artifact and the index over them; thread-safe searches."""

    def __init__(self, vectors: np.ndarray, settings: IndexSettings) -> None:
        self.vectors = vectors  # [items, d] float32, row i = vocabulary line i
        self.index = build_index(vectors, settings)
        self.sphere = self.index.d == vectors.shape[1] + 1  # queries get a 0 coordinate

    @classmethod
    def load(cls, artifact: Artifact, settings: IndexSettings) -> Retriever:
        """Read, check and index the artifact's item vectors.

        Raises:
            ArtifactError: the model has no retrieval, or its vectors file is unreadable, of
                the wrong dtype or shape, or not finite.
        """
        spec = artifact.manifest.retrieval
        if spec is None:
            raise ArtifactError(f"{artifact.path}: the model has no retrieval")
        size = artifact.manifest.vocabularies["item_id"].size
        return cls(read_vectors(artifact.path / spec.item_vectors, size, spec.dim), settings)

    @property
    def kind(self) -> str:
        """`exact` or `ivf`."""
        return "ivf" if isinstance(self.index, faiss.IndexIVF) else "exact"

    def __len__(self) -> int:
        return len(self.vectors)

    def search(self, query: np.ndarray, depth: int, excluded: Set[int]) -> np.ndarray:
        """The item indices (FIRST_ID + position) of the `depth` items whose vectors have the
        highest inner product with `query` [d], best first, none of `excluded` (item indices);
        fewer where the catalogue has fewer."""
        k = min(len(self.vectors), depth + len(excluded))
        if k <= 0:
            return np.zeros(0, dtype=np.int64)
        row = query.reshape(1, -1).astype(np.float32)
        if self.sphere:
            row = np.hstack([row, np.zeros((1, 1), dtype=np.float32)])
        _, found = self.index.search(row, k)
        # a set lookup per item found: cheaper than np.isin's sort at these sizes
        kept = [i for i in (found[0] + FIRST_ID).tolist() if i >= FIRST_ID and i not in excluded]
        return np.array(kept[:depth], dtype=np.int64)


def build_index(vectors: np.ndarray, settings: IndexSettings) -> faiss.Index:
    """An exact inner-product index over `vectors` [n, d], or past `settings.exact_max` items an
    IVF one over the vectors put on a sphere ([n, d + 1], see the module docstring; spherical
    k-means on a sample of SAMPLE_PER_LIST vectors per list)."""
    faiss.omp_set_num_threads(settings.threads)
    n, dim = vectors.shape
    if n <= settings.exact_max:
        index = faiss.IndexFlatIP(dim)
        index.add(vectors)
        return index
    norms = np.linalg.norm(vectors.astype(np.float64), axis=1)
    lift = np.sqrt(np.maximum(norms.max() ** 2 - norms**2, 0.0))
    sphere = np.hstack([vectors, lift[:, None].astype(np.float32)])
    nlist = min(n, settings.nlist or max(1, int(np.sqrt(n))))
    ivf = faiss.IndexIVFFlat(faiss.IndexFlatIP(dim + 1), dim + 1, nlist, faiss.METRIC_INNER_PRODUCT)
    ivf.cp.seed = settings.seed
    ivf.cp.spherical = True
    rng = np.random.default_rng(settings.seed)
    sample = sphere[np.sort(rng.choice(n, min(n, SAMPLE_PER_LIST * nlist), replace=False))]
    ivf.train(sample)
    ivf.add(sphere)
    ivf.nprobe = min(nlist, settings.nprobe)
    return ivf


def read_vectors(path: Path, n_items: int, dim: int) -> np.ndarray:
    """The item vectors file, checked: float32 [n_items, dim], every value finite.

    Raises:
        ArtifactError: what is wrong with it.
    """
    try:
        vectors = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as e:
        raise ArtifactError(f"{path}: unreadable item vectors ({e})") from None
    if vectors.dtype != np.float32 or vectors.shape != (n_items, dim):
        raise ArtifactError(
            f"{path}: item vectors are {vectors.dtype} {list(vectors.shape)}, the manifest "
            f"says float32 [{n_items}, {dim}] (one per catalogue item)"
        )
    if not np.isfinite(vectors).all():
        raise ArtifactError(f"{path}: item vectors are not all finite")
    return np.ascontiguousarray(vectors)
