"""InferenceEngine: one onnxruntime session for one verified artifact.

The session's inputs and outputs are checked against the manifest before anything is served, and
`warmup()` runs the graph once on a batch of one user and one candidate (the online shape) and
checks every output; the service is ready only after that succeeded (Triton's rule).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort

from service.artifact import MODEL_FILE, PAD, UNK, Artifact, ArtifactError, Manifest

_ORT_DTYPES = {"int64": "tensor(int64)", "float32": "tensor(float)"}
GRAPH_INPUTS = ("user_id", "history", "candidate", "candidate_row")  # what encoding.py builds
PROBABILITY_TOLERANCE = 1e-4  # user-task class probabilities must sum to 1 within this


class InferenceEngine:
    """Runs the artifact's graph on index arrays; thread-safe (ORT sessions are)."""

    def __init__(self, artifact: Artifact, threads: int) -> None:
        """Create the session and check it against the manifest.

        Args:
            artifact: A verified artifact (service.artifact.load_artifact).
            threads: ONNX Runtime intra-op threads.

        Raises:
            ArtifactError: the graph does not load or does not match the manifest.
        """
        self.artifact = artifact
        self.manifest: Manifest = artifact.manifest
        self.session = open_session(artifact.path / MODEL_FILE, threads)
        self._check_signature()
        self.output_names = [o.name for o in self.manifest.outputs]

    def _check_signature(self) -> None:
        where = self.artifact.path / MODEL_FILE
        if sorted(i.name for i in self.manifest.inputs) != sorted(GRAPH_INPUTS):
            raise ArtifactError(
                f"{where}: the manifest's inputs must be {', '.join(GRAPH_INPUTS)} (DESIGN.md)"
            )
        for kind, declared, actual in (
            ("inputs", self.manifest.inputs, self.session.get_inputs()),
            ("outputs", self.manifest.outputs, self.session.get_outputs()),
        ):
            found = {a.name: a.type for a in actual}
            expected = {d.name: _ORT_DTYPES[d.dtype] for d in declared}
            if found != expected:
                raise ArtifactError(
                    f"{where}: graph {kind} {found} do not match the manifest's {expected}"
                )
            shapes = {a.name: tuple(a.shape) for a in actual}
            narrowest = self.manifest.history_min_length
            for d in declared:
                said = f"the manifest says {list(d.shape)}"
                shape = d.shape
                if d.name == "history" and narrowest is not None:
                    shape = (shape[0], "L")  # narrower windows too: the width is not fixed
                    said += f" from width {narrowest} (history_min_length), so not a fixed width"
                if not _same_shape(shape, shapes[d.name]):
                    raise ArtifactError(
                        f"{where}: graph {kind[:-1]} {d.name} has shape {list(shapes[d.name])}, "
                        + said
                    )
        history = next(i for i in self.manifest.inputs if i.name == "history")
        if history.shape[-1] != self.manifest.history_length:
            raise ArtifactError(
                f"{where}: history is {list(history.shape)} wide, the manifest's history_length "
                f"is {self.manifest.history_length}"
            )

    def run(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """One session run: graph inputs by name -> every task's output by name."""
        values = self.session.run(self.output_names, inputs)
        return dict(zip(self.output_names, values, strict=True))

    def warmup(self) -> None:
        """Run one user with one unknown candidate and check every output.

        Raises:
            ArtifactError: an output has the wrong shape, is not finite, is not a probability, or
                a user task's classes do not sum to 1.
        """
        length = self.manifest.history_length
        outputs = self.run(
            {
                "user_id": np.array([UNK], dtype=np.int64),
                "history": np.full((1, length), PAD, dtype=np.int64),
                "candidate": np.array([UNK], dtype=np.int64),
                "candidate_row": np.zeros(1, dtype=np.int64),
            }
        )
        where = self.artifact.path / MODEL_FILE
        for task in self.manifest.tasks:
            out = outputs[task.name]
            shape = (1,) if task.level == "item" else (1, len(task.classes))
            if out.shape != shape:
                raise ArtifactError(f"{where}: warm-up: {task.name} has shape {out.shape}")
            if not np.all(np.isfinite(out)):
                raise ArtifactError(f"{where}: warm-up: {task.name} is not finite")
            if task.kind != "regression" and (out.min() < 0 or out.max() > 1):
                raise ArtifactError(f"{where}: warm-up: {task.name} is not a probability")
            if task.kind == "multiclass" and abs(float(out.sum()) - 1) > PROBABILITY_TOLERANCE:
                raise ArtifactError(f"{where}: warm-up: {task.name} classes do not sum to 1")


def open_session(path: Path, threads: int) -> ort.InferenceSession:
    """An onnxruntime session on the CPU with `threads` intra-op threads and one inter-op thread
    (a worker owns one core; ORT's default would take every core per session).

    Raises:
        ArtifactError: onnxruntime cannot load the graph.
    """
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    try:
        return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    except Exception as e:  # ORT raises its own exception types for bad graphs
        raise ArtifactError(f"{path}: onnxruntime cannot load it: {e}") from None


def _same_shape(declared: tuple[int | str, ...], actual: tuple[object, ...]) -> bool:
    """A fixed dimension must be equal; a symbolic one (B, N) must not be fixed in the graph
    (its name may differ)."""
    if len(declared) != len(actual):
        return False
    return all(
        a == d if isinstance(d, int) else not isinstance(a, int)
        for d, a in zip(declared, actual, strict=True)
    )
