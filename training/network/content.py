"""The item representation: id embedding + a content encoder over the item features.

One module serves history items and candidates alike. In training, a share of the ids is replaced
by the unknown index (DropoutNet: Volkovs et al., NeurIPS 2017,
https://papers.nips.cc/paper/7081-dropoutnet-addressing-cold-start-in-recommender-systems),
so the unknown-id row is trained and the content path alone must carry an item whose id the
model never learned: an item without training interactions, or one added to the catalogue
later. Ids map to embedding rows through `id_row`, which sends every untrained id to the unknown
row, so no row that serving can reach keeps its random initial value.

The content encoder embeds each feature to D (token kinds: an embedding, masked-mean pooled;
dense kinds: a linear map of the values and their missing flag), concatenates and mixes them
with an MLP. The exported graph does not run it: export precomputes one row per item
(`table()`), so serving content is a lookup.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from service.artifact import FIRST_ID, PAD, TOKEN_KINDS, UNK
from training.data.content import ContentInput
from training.network.encoders import MeanEncoder
from training.network.layers import MLP

EMBEDDING_STD = 0.05


def drop_ids(ids: Tensor, rate: float) -> Tensor:
    """In training: each non-padding id replaced by UNK with probability `rate`."""
    if rate <= 0:
        return ids
    dropped = (torch.rand(ids.shape) < rate) & (ids != PAD)
    return torch.where(dropped, torch.full_like(ids, UNK), ids)


def _feature_embedding(feature: ContentInput, d_model: int) -> nn.Module:
    """Tokens: an embedding (PAD row zero); dense values with their missing flag: a linear map."""
    if feature.kind not in TOKEN_KINDS:
        return nn.Linear(feature.width, d_model)
    embedding = nn.Embedding(feature.n_tokens, d_model, padding_idx=PAD)
    nn.init.normal_(embedding.weight, std=EMBEDDING_STD)
    with torch.no_grad():
        embedding.weight[PAD].zero_()
    return embedding


DENSE_DROPPED = ("text", "vector")  # kinds whose values content dropout hides


def _as_missing(x: Tensor, rows: Tensor) -> Tensor:
    """[M, d + 1] values with a missing flag -> the same with `rows` [M] read as missing."""
    missing = torch.zeros_like(x)
    missing[:, -1] = 1.0
    return torch.where(rows[:, None], missing, x)


class ContentEncoder(nn.Module):
    """Raw feature arrays of M items -> [M, D]."""

    def __init__(
        self,
        inputs: tuple[ContentInput, ...],
        d_model: int,
        token_dropout: float,
        content_dropout: float = 0.0,
    ) -> None:
        super().__init__()
        self.inputs = inputs
        self.token_dropout = token_dropout
        self.content_dropout = content_dropout
        self.embed = nn.ModuleDict({f.column: _feature_embedding(f, d_model) for f in inputs})
        self.pool = MeanEncoder()
        self.mix = MLP(d_model * len(inputs), (d_model,), d_out=d_model)

    def forward(self, features: dict[str, Tensor]) -> Tensor:
        parts = []
        for f in self.inputs:
            x = features[f.column]
            if f.kind in DENSE_DROPPED and self.training and self.content_dropout > 0:
                x = _as_missing(x, torch.rand(x.shape[0]) < self.content_dropout)
            if f.kind in TOKEN_KINDS:
                tokens = drop_ids(x, self.token_dropout if self.training else 0.0)
                if f.kind == "categorical":
                    tokens = tokens.unsqueeze(-1)  # [M, 1]
                parts.append(self.pool(self.embed[f.column](tokens), tokens != PAD))  # [M, D]
            else:
                parts.append(self.embed[f.column](x))  # [M, D]
        return self.mix(torch.cat(parts, dim=-1))  # [M, D]


@dataclass(frozen=True)
class ItemSpec:
    """How items are represented."""

    n_items: int  # vocabulary size with PAD and UNK
    d_model: int
    features: tuple[ContentInput, ...] = ()
    id_dropout: float = 0.0
    token_dropout: float = 0.0
    content_dropout: float = 0.0


class ItemEncoder(nn.Module):
    """Item indices (any shape) -> vectors [..., D]: id embedding + content."""

    def __init__(self, spec: ItemSpec) -> None:
        super().__init__()
        self.spec = spec
        self.embedding = nn.Embedding(spec.n_items, spec.d_model, padding_idx=PAD)
        nn.init.normal_(self.embedding.weight, std=EMBEDDING_STD)
        with torch.no_grad():
            self.embedding.weight[PAD].zero_()
        # Which embedding row each item index reads: its own once trained, UNK until then.
        self.id_row: Tensor
        self.register_buffer("id_row", torch.arange(spec.n_items))
        self.content = (
            ContentEncoder(spec.features, spec.d_model, spec.token_dropout, spec.content_dropout)
            if spec.features
            else None
        )
        for f in spec.features:  # the raw arrays, one row per item index (set by set_content)
            shape = (spec.n_items,) if f.kind == "categorical" else (spec.n_items, f.width)
            dtype = torch.int64 if f.kind in TOKEN_KINDS else torch.float32
            self.register_buffer(f"feature_{f.column}", torch.zeros(shape, dtype=dtype))
        # The content of an item the catalogue does not know (index UNK); without features there
        # is no content path, and no parameter that would never get a gradient (DDP refuses those)
        self.unknown = nn.Parameter(torch.zeros(spec.d_model)) if spec.features else None

    def set_content(self, arrays: dict[str, Tensor]) -> None:
        """Load the raw feature arrays (one row per item index)."""
        for f in self.spec.features:
            buffer = getattr(self, f"feature_{f.column}")
            buffer.copy_(arrays[f.column].to(buffer.dtype))

    def rows(self, idx: Tensor) -> Tensor:
        """Embedding rows of item indices (UNK for untrained ids; some dropped in training)."""
        rows = self.id_row[idx]
        return drop_ids(rows, self.spec.id_dropout) if self.training else rows

    def trained_items(self) -> Tensor:
        """[n_items] bool: the real items whose id reads its own row (training interactions)."""
        index = torch.arange(self.spec.n_items, device=self.id_row.device)
        return (self.id_row == index) & (index >= FIRST_ID)

    def forward(self, idx: Tensor) -> Tensor:
        out = self.embedding(self.rows(idx))  # [..., D]
        if self.content is None:
            return out
        unique, inverse = torch.unique(idx.reshape(-1), return_inverse=True)  # [U], [n]
        vectors = self.content_of(unique)  # [U, D]
        return out + vectors[inverse].reshape(*idx.shape, -1)

    def content_of(self, idx: Tensor) -> Tensor:
        """[M] item indices -> [M, D] content (0 for padding, the learned unknown for UNK)."""
        assert self.content is not None, "a model without item features has no content"
        assert self.unknown is not None
        features = {f.column: getattr(self, f"feature_{f.column}")[idx] for f in self.spec.features}
        vectors = self.content(features)  # [M, D]
        vectors = torch.where((idx == UNK)[:, None], self.unknown.expand_as(vectors), vectors)
        return vectors * (idx != PAD)[:, None]

    def table(self) -> Tensor:
        """[n_items, D]: every item index's vector, as the exported graph looks it up."""
        return self(torch.arange(self.spec.n_items))
