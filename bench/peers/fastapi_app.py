"""The plain FastAPI baseline: a pydantic request model and a sync handler (FastAPI runs it in
its thread pool), served by uvicorn with hydrarec's worker count. FastAPI and uvicorn are
hydrarec's own pins (pyproject.toml)."""

from __future__ import annotations

from fastapi import FastAPI
from pydantic import BaseModel

from bench.peers.model import load


class Body(BaseModel):
    user_id: str
    history: list[str] = []
    candidates: list[str]


app = FastAPI()
model = load()


@app.post("/predict")
def predict(body: Body) -> dict[str, object]:
    return model.predict(body.user_id, body.history, body.candidates)


@app.get("/readyz")
def ready() -> dict[str, str]:
    return {"status": "ok"}
