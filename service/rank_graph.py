"""Recommend mode's second stage: the artifact's rank graph (the item heads alone) scores the
retrieved items from the user state the main graph already computed and the items' vectors, so a
recommend request runs the user side of the model once (service.artifact.RetrievalSpec)."""

from __future__ import annotations

import numpy as np

from service.artifact import Artifact, ArtifactError
from service.engine import open_session

INPUTS = {
    "user_state": "tensor(float)",
    "item": "tensor(float)",
    "candidate_row": "tensor(int64)",
}


class RankGraph:
    """An onnxruntime session of the rank graph, checked against the manifest."""

    def __init__(self, artifact: Artifact, threads: int) -> None:
        """Load the rank graph and check its inputs and outputs.

        Raises:
            ArtifactError: the graph does not load, or does not take the user state, item rows
                and candidate rows, or does not answer every item task.
        """
        spec = artifact.manifest.retrieval
        if spec is None:
            raise ArtifactError(f"{artifact.path}: the model has no retrieval")
        path = artifact.path / spec.rank_graph
        self.session = open_session(path, threads)
        self.names = [t.name for t in artifact.manifest.tasks if t.level == "item"]
        inputs = {i.name: i.type for i in self.session.get_inputs()}
        outputs = [o.name for o in self.session.get_outputs()]
        if inputs != INPUTS or sorted(outputs) != sorted(self.names):
            raise ArtifactError(
                f"{path}: takes {inputs} and answers {outputs}; recommend mode needs "
                f"{INPUTS} -> {self.names}"
            )

    def run(self, user_state: np.ndarray, items: np.ndarray) -> dict[str, np.ndarray]:
        """Every item task's output [N] for the N items whose vectors are `items` [N, d], all
        for the user of `user_state` [1, item tasks, D]."""
        feed = {
            "user_state": user_state,
            "item": items,
            "candidate_row": np.zeros(len(items), dtype=np.int64),
        }
        values = self.session.run(self.names, feed)
        return dict(zip(self.names, values, strict=True))
