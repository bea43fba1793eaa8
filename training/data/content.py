"""Item content as arrays: what the content encoder reads, one row per item.

Per feature kind (the content graph's inputs, named after the column):
- categorical: int64 [M] token index (0 = no token, 1 = a token unknown to the model, from 2);
- multi_categorical: int64 [M, T] token indices, 0-padded (masked-mean pooled by the encoder);
- numeric: float32 [M, 2]: the value standardised with the training items' mean and std (0 when
  missing), then a missing flag;
- text: float32 [M, dim + 1]: the sentence encoder's unit vector (0 when empty), a missing flag;
- vector: float32 [M, dim + 1]: the values (0 when missing), a missing flag.
`fit_features` learns what a feature needs from the training items table (token vocabularies,
numeric statistics, the text encoder's identity); `encode_features` applies it to any items
table with the same columns: the training one, or the new items of `python -m training
catalogue`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from service.artifact import TOKEN_KINDS, FeatureSpec
from training.data.features import tokens_of, vector_values
from training.data.raw import DataError, Problems, RawTable, numbers
from training.data.text import TextEmbedder
from training.data.vocab import Vocab


@dataclass(frozen=True)
class ContentInput:
    """Shape of one feature's array, as the content encoder reads it."""

    column: str
    kind: str  # a FeatureSpec kind
    n_tokens: int = 0  # token kinds: vocabulary size with PAD and UNK
    width: int = 1  # multi_categorical: tokens per item (T); dense kinds: values + missing flag


@dataclass(frozen=True)
class ItemContent:
    """The content of every item of the vocabulary: arrays indexed by item index (the PAD and
    UNK rows empty), their shapes, and what encodes new items the same way."""

    fitted: FittedFeatures
    arrays: dict[str, np.ndarray]
    inputs: tuple[ContentInput, ...]


@dataclass(frozen=True)
class FittedFeatures:
    """Item features ready to encode any items table: specs with their statistics filled in."""

    specs: tuple[FeatureSpec, ...]
    tokens: dict[str, Vocab]  # token kinds: column -> token vocabulary


def fit_features(
    items: RawTable, specs: Sequence[FeatureSpec], seed: int
) -> tuple[FittedFeatures, RawTable]:
    """Token vocabularies, numeric statistics and text encoder identity from the items table.

    Returns the fitted features and the table to encode (a `shuffled` control column permuted
    across items with `seed`).
    """
    rng = np.random.default_rng(seed)
    frame = items.frame.copy()
    resolved, tokens = [], {}
    for spec in specs:
        if spec.shuffled:
            for column in _columns(spec, frame):
                frame[column] = rng.permutation(frame[column].to_numpy())
        if spec.kind in TOKEN_KINDS:
            tokens[spec.column] = Vocab.build(
                t for cell in tokens_of(spec, frame[spec.column]) for t in cell
            )
        elif spec.kind == "numeric":
            values = numbers(items, spec.column, Problems(), integer=False, empty_ok=True)
            known = values.to_numpy()[np.isfinite(values.to_numpy())]
            std = float(known.std()) if len(known) > 1 else 0.0  # population std
            mean = float(known.mean()) if len(known) else 0.0
            spec = spec.model_copy(update={"mean": mean, "std": std if std > 0 else 1.0})
        elif spec.kind == "text":
            embedder = TextEmbedder(spec.encoder)
            spec = spec.model_copy(update={"encoder_sha256": embedder.fingerprint})
        resolved.append(spec)
    table = RawTable(frame, items.file, items.first_row, items.row_word)
    return FittedFeatures(tuple(resolved), tokens), table


def _columns(spec: FeatureSpec, frame: pd.DataFrame) -> list[str]:
    if spec.kind == "vector" and spec.column not in frame.columns:
        return [f"{spec.column}_{k}" for k in range(spec.dim or 0)]
    return [spec.column]


def encode_features(
    items: RawTable, fitted: FittedFeatures, progress: bool = False
) -> tuple[dict[str, np.ndarray], tuple[FeatureSpec, ...]]:
    """The content arrays of every row of a validated items table, and the specs with text
    widths known.

    Raises:
        DataError: a value its feature cannot read (the table was not validated), or a text
            encoder whose width differs from the fitted one.
    """
    problems = Problems()
    arrays: dict[str, np.ndarray] = {}
    specs = []
    for spec in fitted.specs:
        cells = items.frame[spec.column] if spec.column in items.frame.columns else None
        if spec.kind in TOKEN_KINDS:
            arrays[spec.column] = _token_array(spec, fitted.tokens[spec.column], cells)
        elif spec.kind == "numeric":
            values = numbers(items, spec.column, problems, integer=False, empty_ok=True)
            arrays[spec.column] = _with_flag(
                ((values.to_numpy() - (spec.mean or 0.0)) / (spec.std or 1.0))[:, None]
            )
        elif spec.kind == "vector":
            values, missing = vector_values(items, spec, problems)
            values[missing] = np.nan
            arrays[spec.column] = _with_flag(values)
        else:
            arrays[spec.column], spec = _text_array(spec, cells, progress)
        specs.append(spec)
    problems.raise_if_any()
    return arrays, tuple(specs)


def _token_array(spec: FeatureSpec, vocab: Vocab, cells: pd.Series | None) -> np.ndarray:
    assert cells is not None, "validated tables have every feature column"
    per_item = tokens_of(spec, cells)
    width = 1 if spec.kind == "categorical" else max(1, max(map(len, per_item), default=1))
    out = np.zeros((len(per_item), width), dtype=np.int64)
    for i, tokens in enumerate(per_item):
        if tokens:
            out[i, : len(tokens)] = vocab.encode(tokens)
    return out[:, 0] if spec.kind == "categorical" else out


def _with_flag(values: np.ndarray) -> np.ndarray:
    """[M, d] with NaN rows for missing -> [M, d + 1]: values (0 where missing), missing flag."""
    missing = np.isnan(values).all(axis=1, keepdims=True)
    return np.concatenate([np.nan_to_num(values), missing], axis=1).astype(np.float32)


def _text_array(
    spec: FeatureSpec, cells: pd.Series | None, progress: bool
) -> tuple[np.ndarray, FeatureSpec]:
    assert cells is not None, "validated tables have every feature column"
    texts = cells.astype(str).str.strip()
    embedder = TextEmbedder(spec.encoder)
    if spec.encoder_sha256 not in (None, embedder.fingerprint):
        raise DataError(
            f"text feature {spec.column!r}: the encoder {spec.encoder!r} is not the one the model "
            "was trained with (its files differ)"
        )
    present = (texts != "").to_numpy()
    vectors = embedder.embed(texts[present].tolist(), progress)
    dim = spec.dim or embedder.dim or vectors.shape[1]
    if spec.dim is not None and len(vectors) and vectors.shape[1] != spec.dim:
        raise DataError(
            f"text feature {spec.column!r}: the encoder gives {vectors.shape[1]} dimensions, "
            f"the model reads {spec.dim}"
        )
    values = np.full((len(texts), dim), np.nan)
    values[present] = vectors
    return _with_flag(values), spec.model_copy(update={"dim": dim})


def item_content(
    items: RawTable, specs: Sequence[FeatureSpec], vocab: Vocab, seed: int, progress: bool = False
) -> ItemContent:
    """Fit the features on the (validated) items table and encode every item by its index."""
    fitted, table = fit_features(items, specs, seed)
    rows, specs_out = encode_features(table, fitted, progress)
    index = vocab.encode(table.frame["item_id"])
    arrays = {}
    for column, values in rows.items():
        full = np.zeros((vocab.size, *values.shape[1:]), dtype=values.dtype)
        full[index] = values
        arrays[column] = full
    fitted = FittedFeatures(specs_out, fitted.tokens)
    return ItemContent(fitted, arrays, content_inputs(fitted, arrays))


def content_inputs(
    fitted: FittedFeatures, arrays: dict[str, np.ndarray]
) -> tuple[ContentInput, ...]:
    """The shapes the content encoder is built for."""
    return tuple(
        ContentInput(
            column=f.column,
            kind=f.kind,
            n_tokens=fitted.tokens[f.column].size if f.kind in TOKEN_KINDS else 0,
            width=1 if f.kind == "categorical" else int(arrays[f.column].shape[1]),
        )
        for f in fitted.specs
    )
