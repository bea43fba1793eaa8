"""Recommend mode's first stage: an index over every catalogue item's vector (faiss).

The artifact's item vectors (service.artifact.RetrievalSpec) are read, checked and indexed when
the version is loaded: exact inner product up to HYDRAREC_INDEX_EXACT_MAX items (one matrix
product per request: at MovieLens size, microseconds), an HNSW graph past it (sub-linear search;
its recall of the exact top R is measured in `make bench`). Index position i is line i of the
item vocabulary, so item index = FIRST_ID + position.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path

import faiss
import numpy as np

from service.artifact import FIRST_ID, Artifact, ArtifactError


@dataclass(frozen=True)
class IndexSettings:
    """How the index is built and searched (HYDRAREC_INDEX_*)."""

    exact_max: int  # most items searched exactly; past it, HNSW
    hnsw_m: int  # neighbours per node of the HNSW graph
    ef_construction: int
    ef_search: int  # candidates HNSW keeps while searching (at least the items asked for)
    threads: int


class Retriever:
    """The item vectors of one artifact and the index over them; thread-safe searches."""

    def __init__(self, artifact: Artifact, settings: IndexSettings) -> None:
        """Read, check and index the artifact's item vectors.

        Raises:
            ArtifactError: the model has no retrieval, or its vectors file is unreadable, of
                the wrong dtype or shape, or not finite.
        """
        spec = artifact.manifest.retrieval
        if spec is None:
            raise ArtifactError(f"{artifact.path}: the model has no retrieval")
        self.vectors = read_vectors(
            artifact.path / spec.item_vectors,
            artifact.manifest.vocabularies["item_id"].size,
            spec.dim,
        )
        faiss.omp_set_num_threads(settings.threads)
        self.exact = len(self.vectors) <= settings.exact_max
        if self.exact:
            self.index: faiss.Index = faiss.IndexFlatIP(spec.dim)
        else:
            hnsw = faiss.IndexHNSWFlat(spec.dim, settings.hnsw_m, faiss.METRIC_INNER_PRODUCT)
            hnsw.hnsw.efConstruction = settings.ef_construction
            hnsw.hnsw.efSearch = settings.ef_search  # faiss searches max(efSearch, k) wide
            self.index = hnsw
        self.index.add(self.vectors)

    @property
    def kind(self) -> str:
        """`exact` or `hnsw`."""
        return "exact" if self.exact else "hnsw"

    def __len__(self) -> int:
        return len(self.vectors)

    def search(self, query: np.ndarray, depth: int, excluded: Collection[int]) -> np.ndarray:
        """The item indices (FIRST_ID + position) of the `depth` items whose vectors have the
        highest inner product with `query` [d], best first, none of `excluded` (item indices);
        fewer where the catalogue has fewer."""
        k = min(len(self.vectors), depth + len(excluded))
        if k <= 0:
            return np.zeros(0, dtype=np.int64)
        _, found = self.index.search(query.reshape(1, -1).astype(np.float32), k)
        positions: np.ndarray = np.asarray(found[0], dtype=np.int64)
        items = positions[positions >= 0] + FIRST_ID
        if excluded:
            items = items[~np.isin(items, np.fromiter(excluded, dtype=np.int64))]
        return items[:depth]


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
