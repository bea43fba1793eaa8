"""The manifest an export writes (service.artifact.Manifest, the one definition both sides
share), built from the trained network and what the export found."""

from __future__ import annotations

from service.artifact import (
    QUERY_OUTPUT,
    SCHEMA_VERSION,
    USER_STATE_OUTPUT,
    Manifest,
    RankingSpec,
    RetrievalSpec,
    TensorSpec,
    VocabSpec,
    now_iso,
)
from training.data.vocab import Vocab
from training.network.recommender import MultiTaskRecommender


def narrowest_window(model: MultiTaskRecommender) -> int | None:
    """The fewest history positions the graph takes (the manifest's history_min_length): the
    sequence encoder's window, since older positions are only ever read by the means, where
    padding counts for nothing; None when that is all of L (the width is then fixed)."""
    return model.encoder_length if model.encoder_length < model.history_length else None


def build_manifest(
    model: MultiTaskRecommender,
    vocabs: dict[str, Vocab],
    name: str,
    version: int,
    diff: float,
    details: dict[str, object],
) -> Manifest:
    """The manifest of an exported model: its tasks, graph inputs and outputs (the retrieval's
    after the tasks), vocabularies, default ranking, parity, and `details` (metrics, baselines,
    training config, fit, catalogue, retrieval)."""
    length = model.history_length
    retrieval = details.get("retrieval")
    assert retrieval is None or isinstance(retrieval, RetrievalSpec)
    items = [t for t in model.tasks if t.level == "item"]
    return Manifest(
        schema_version=SCHEMA_VERSION,
        name=name,
        version=version,
        created_at=now_iso(),
        tasks=model.tasks,
        inputs=(
            TensorSpec(name="user_id", dtype="int64", shape=("B",)),
            TensorSpec(name="history", dtype="int64", shape=("B", length)),
            TensorSpec(name="candidate", dtype="int64", shape=("N",)),
            TensorSpec(name="candidate_row", dtype="int64", shape=("N",)),
        ),
        outputs=(
            *(
                TensorSpec(
                    name=t.name,
                    dtype="float32",
                    shape=("N",) if t.level == "item" else ("B", len(t.classes)),
                )
                for t in model.tasks
            ),
            *(
                [
                    TensorSpec(name=QUERY_OUTPUT, dtype="float32", shape=("B", retrieval.dim)),
                    TensorSpec(
                        name=USER_STATE_OUTPUT,
                        dtype="float32",
                        shape=("B", len(items), retrieval.state_dim),
                    ),
                ]
                if retrieval is not None
                else []
            ),
        ),
        history_length=length,
        history_min_length=narrowest_window(model),
        vocabularies={
            k: VocabSpec(file=f"vocab/{k}.txt", size=len(v.ids)) for k, v in vocabs.items()
        },
        ranking=RankingSpec(
            weights={t.name: 1.0 for t in model.tasks if t.level == "item" and t.kind == "binary"}
        ),
        parity_max_abs_diff=diff,
        **details,  # type: ignore[arg-type]
    )
