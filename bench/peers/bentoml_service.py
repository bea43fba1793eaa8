"""The BentoML peer: one service, one sync API (BentoML runs it in its thread pool), as many
workers as hydrarec. Runs in its own virtual environment (requirements.txt, `make bench
ARGS=--peers` builds it): `bentoml serve bench.peers.bentoml_service:Predictor`."""

from __future__ import annotations

import os

import bentoml

from bench.peers.model import load


@bentoml.service(workers=int(os.environ.get("HYDRAREC_PEER_WORKERS", "2")))
class Predictor:
    def __init__(self) -> None:
        self.model = load()

    @bentoml.api  # type: ignore[untyped-decorator]  # bentoml: in .venv-peers only
    def predict(self, user_id: str, history: list[str], candidates: list[str]) -> dict[str, object]:
        return self.model.predict(user_id, history, candidates)
