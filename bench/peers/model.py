"""What each peer serves: a hydrarec artifact's graph behind the plainest code that answers the
same question (every task, candidates ranked by the manifest's formula, the top k).

Only json, numpy and onnxruntime: BentoML's virtual environment has nothing of hydrarec's.
The session has the service's settings (one intra-op thread per worker, all graph
optimisations). No validation, metrics or limits: what a 30-line server does.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import onnxruntime as ort

PAD, UNK, FIRST_ID = 0, 1, 2  # DESIGN.md's index convention


class Model:
    def __init__(self, folder: Path) -> None:
        manifest = json.loads((folder / "manifest.json").read_text())

        def vocab(name: str) -> dict[str, int]:
            ids = (folder / manifest["vocabularies"][name]["file"]).read_text().splitlines()
            return {uid: FIRST_ID + i for i, uid in enumerate(ids)}

        self.users, self.items = vocab("user_id"), vocab("item_id")
        self.length = manifest["history_length"]
        self.weights = manifest["ranking"]["weights"]
        self.top_k = manifest["ranking"]["top_k"]
        self.classes = {t["name"]: t["classes"] for t in manifest["tasks"] if t["level"] == "user"}
        options = ort.SessionOptions()
        options.intra_op_num_threads = 1
        options.inter_op_num_threads = 1
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        self.session = ort.InferenceSession(
            str(folder / "model.onnx"), options, providers=["CPUExecutionProvider"]
        )
        self.names = [o.name for o in self.session.get_outputs()]

    def predict(self, user_id: str, history: list[str], candidates: list[str]) -> dict[str, object]:
        known = [self.items[i] for i in history if i in self.items][-self.length :]
        window = np.full((1, self.length), PAD, dtype=np.int64)
        if known:
            window[0, -len(known) :] = known
        inputs = {
            "user_id": np.array([self.users.get(user_id, UNK)], dtype=np.int64),
            "history": window,
            "candidate": np.array([self.items.get(i, UNK) for i in candidates], dtype=np.int64),
            "candidate_row": np.zeros(len(candidates), dtype=np.int64),
        }
        outputs = dict(zip(self.names, self.session.run(None, inputs), strict=True))
        score = sum(w * outputs[t].astype(np.float64) for t, w in self.weights.items())
        order = np.argsort(-score, kind="stable")[: self.top_k]
        return {
            "user": {
                t: dict(zip(c, outputs[t][0].tolist(), strict=True))
                for t, c in self.classes.items()
            },
            "items": [
                {"item_id": candidates[i], "score": float(score[i])}
                | {t: float(outputs[t][i]) for t in self.weights}
                for i in order.tolist()
            ],
        }


def load() -> Model:
    """The model in HYDRAREC_PEER_MODEL (an artifact folder, models/<name>/<version>)."""
    return Model(Path(os.environ["HYDRAREC_PEER_MODEL"]))
