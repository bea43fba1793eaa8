"""The committed default model (models/movielens/<highest>) verifies and runs as its manifest
says."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort

from service.artifact import FIRST_ID
from service.repository import load_artifact

REPOSITORY = Path(__file__).resolve().parents[1] / "models"


def test_default_artifact_verifies_and_runs() -> None:
    artifact = load_artifact(REPOSITORY, "movielens")
    m = artifact.manifest
    session = ort.InferenceSession(str(artifact.path / "model.onnx"))
    items = artifact.read_vocab("item_id")
    history = np.zeros((1, m.history_length), dtype=np.int64)
    history[0, -3:] = [items.index(i) + FIRST_ID for i in ("242", "302", "377")]

    outputs = session.run(
        None,
        {
            "user_id": np.array([FIRST_ID], dtype=np.int64),
            "history": history,
            "candidate": np.array([FIRST_ID, FIRST_ID + 49], dtype=np.int64),
            "candidate_row": np.zeros(2, dtype=np.int64),
        },
    )

    by_name = dict(zip([o.name for o in m.outputs], outputs, strict=True))
    assert [t.name for t in m.tasks] == ["click", "like", "gender", "age", "occupation"]
    assert by_name["click"].shape == (2,)
    assert by_name["age"].shape == (1, 5)
    for task in m.tasks:
        values = by_name[task.name]
        assert np.all((values >= 0) & (values <= 1))
        if task.level == "user":
            np.testing.assert_allclose(values.sum(axis=1), 1.0, atol=1e-5)
    assert m.parity_max_abs_diff <= 1e-4
    assert m.metrics["click_auc"] >= 0.88
    assert m.metrics["like_auc"] >= 0.75


def test_default_model_scores_new_items_from_their_content() -> None:
    """The highest version is the trained one (refit on all of MovieLens-100K) plus
    examples/new_movies.csv (`catalogue`), whose two films alone are served from content."""
    artifact = load_artifact(REPOSITORY, "movielens")
    m = artifact.manifest
    assert [(f.column, f.kind) for f in m.catalogue.features] == [
        ("genres", "multi_categorical"),
        ("year", "numeric"),
        ("title", "text"),
    ]
    items = artifact.read_vocab("item_id")
    new = [items.index(i) + FIRST_ID for i in ("1683", "1684")]
    assert items[-2:] == ["1683", "1684"], "added after training, by catalogue"
    assert m.catalogue.n_trained == len(items) - 2, "the refit trained every rated item"
    assert m.fit is not None
    assert (m.fit.refit, m.fit.events, m.fit.items) == (True, 100_000, len(items) - 2)
    session = ort.InferenceSession(str(artifact.path / "model.onnx"))
    history = np.zeros((1, m.history_length), dtype=np.int64)
    history[0, -3:] = [items.index(i) + FIRST_ID for i in ("50", "172", "181")]  # Star Wars x3
    click = session.run(
        ["click"],
        {
            "user_id": np.array([FIRST_ID], dtype=np.int64),
            "history": history,
            "candidate": np.array([*new, 1], dtype=np.int64),  # 1: an unknown id
            "candidate_row": np.zeros(3, dtype=np.int64),
        },
    )[0]
    assert len(set(np.round(click, 6).tolist())) == 3, "each new item scored from its content"
    assert m.metrics["cold_item_click_auc"] > m.baselines["cold_item_click_auc"]
