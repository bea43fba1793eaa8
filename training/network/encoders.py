"""History encoders: [B, L] item indices (0 = padding, left-padded) -> a user vector [B, D].

All four share one interface: `forward(emb [B, L, D], mask [B, L]) -> [B, D]`. Histories are
left-padded (most recent item last), so recurrent and attention encoders read the last position;
this avoids packed sequences, which do not export to ONNX.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class MeanEncoder(nn.Module):
    """Average of the history embeddings (zeros for an empty history)."""

    def forward(self, emb: Tensor, mask: Tensor) -> Tensor:
        if self.training:  # the form every earlier model trained with (the same figures)
            column = mask.to(emb.dtype).unsqueeze(-1)  # [B, L, 1]
            return (emb * column).sum(dim=1) / column.sum(dim=1).clamp(min=1.0)
        weights = mask.to(emb.dtype).unsqueeze(1)  # [B, 1, L]
        total = (weights @ emb).squeeze(1)  # [B, D]: one batched product, no [B, L, D] temporary
        return total / weights.sum(dim=-1).clamp(min=1.0)


class RNNEncoder(nn.Module):
    """GRU or LSTM over the history; the state after the most recent item (Hidasi et al.,
    GRU4Rec, ICLR 2016, https://arxiv.org/abs/1511.06939)."""

    def __init__(self, d_model: int, cell: str) -> None:
        super().__init__()
        rnn = nn.GRU if cell == "gru" else nn.LSTM
        self.rnn = rnn(d_model, d_model, batch_first=True)

    def forward(self, emb: Tensor, mask: Tensor) -> Tensor:  # noqa: ARG002 (left padding)
        out, _ = self.rnn(emb)  # [B, L, D]
        return out[:, -1, :]  # [B, D]


class AttentionEncoder(nn.Module):
    """Self-attention over the history, read at the most recent position (Kang & McAuley,
    SASRec, ICDM 2018, https://arxiv.org/abs/1808.09781). Pre-LayerNorm blocks; attention is
    written out with matmuls and a finite mask value so an all-padding row gives no NaN."""

    def __init__(
        self, d_model: int, history_length: int, n_heads: int, n_layers: int, dropout: float
    ) -> None:
        super().__init__()
        self.position = nn.Parameter(torch.randn(history_length, d_model) * 0.02)  # [L, D]
        self.blocks = nn.ModuleList(Block(d_model, n_heads, dropout) for _ in range(n_layers))
        self.norm = nn.LayerNorm(d_model)
        self.dropout = nn.Dropout(dropout)

    def forward(self, emb: Tensor, mask: Tensor) -> Tensor:
        x = self.dropout(emb + self.position)  # [B, L, D]
        *inner, last = self.blocks
        for block in inner:
            x = block(x, mask)
        # inference computes the last position alone; training keeps the whole block (the same
        # figures; its dropout draws, and so the runs, stay those of every earlier model)
        return self.norm(last(x, mask, last_only=not self.training)[:, -1, :])  # [B, D]


class Block(nn.Module):
    """One pre-LayerNorm self-attention block: attention, then a position-wise feed-forward."""

    def __init__(self, d_model: int, n_heads: int, dropout: float) -> None:
        super().__init__()
        self.n_heads = n_heads
        self.qkv = nn.Linear(d_model, 3 * d_model)
        self.proj = nn.Linear(d_model, d_model)
        self.norm1 = nn.LayerNorm(d_model)
        self.norm2 = nn.LayerNorm(d_model)
        self.ffn = nn.Sequential(
            nn.Linear(d_model, 2 * d_model), nn.ReLU(), nn.Linear(2 * d_model, d_model)
        )
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: Tensor, mask: Tensor, last_only: bool = False) -> Tensor:
        """[B, L, D] -> [B, L, D]; `last_only`: only the most recent position's output,
        [B, 1, D] (every position is still read as a key): what an encoder read at that
        position needs of its last block, at about a quarter of the block's work."""
        b, _, d = x.shape
        normed = self.norm1(x)
        if last_only:  # the query of the last position only; keys and values of all
            x = x[:, -1:, :]
            w, bias = self.qkv.weight, self.qkv.bias
            q = F.linear(normed[:, -1, :], w[:d], bias[:d]).unsqueeze(1)  # [B, 1, D]
            flat = normed.reshape(-1, d)  # [B * L, D]: a matrix product with its bias fused
            k = F.linear(flat, w[d : 2 * d], bias[d : 2 * d]).view(b, -1, d)  # [B, L, D]
            v = F.linear(flat, w[2 * d :], bias[2 * d :]).view(b, -1, d)  # [B, L, D]
        else:
            q, k, v = self.qkv(normed).chunk(3, dim=-1)  # 3 x [B, L, D]
        heads = [
            t.reshape(b, -1, self.n_heads, d // self.n_heads).transpose(1, 2) for t in (q, k, v)
        ]  # 3 x [B, H, L or 1, D/H]
        scores = heads[0] @ heads[1].transpose(-2, -1) / math.sqrt(d // self.n_heads)
        # mask: [B, L] the keys every position may read, or [B, L, L] per position (causal)
        keys = mask[:, None, None, :] if mask.dim() == 2 else mask[:, None, -x.shape[1] :, :]
        scores = scores.masked_fill(~keys, -1e9)  # [B, H, L or 1, L]
        attended = self.dropout(scores.softmax(dim=-1)) @ heads[2]  # [B, H, L or 1, D/H]
        x = x + self.dropout(self.proj(attended.transpose(1, 2).reshape(b, -1, d)))
        return x + self.dropout(self.ffn(self.norm2(x)))


def build_encoder(
    name: str, d_model: int, history_length: int, n_heads: int, n_layers: int, dropout: float
) -> nn.Module:
    """The encoder called `name` (mean | gru | lstm | attention); output width is d_model."""
    if name == "mean":
        return MeanEncoder()
    if name in ("gru", "lstm"):
        return RNNEncoder(d_model, name)
    if name == "attention":
        return AttentionEncoder(d_model, history_length, n_heads, n_layers, dropout)
    raise ValueError(f"unknown encoder {name!r}")
