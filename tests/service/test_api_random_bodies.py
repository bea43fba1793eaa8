"""Seeded random bodies: each answer is a 200 or a documented 4xx with an ErrorBody, never a 5xx."""

from __future__ import annotations

import json
import random

from fastapi.testclient import TestClient

from service.schemas import ErrorBody

KEYS = ["user_id", "history", "candidates", "top_k", "weights", "other"]
N_BODIES = 300


def random_value(rng: random.Random, depth: int = 0) -> object:
    scalars: list[object] = [
        "196",
        "",
        "x" * rng.choice([1, 255, 256, 257, 5000]),
        "ünï\u0000cødé\n",
        rng.randint(-(10**30), 10**30),
        rng.random() * 1e308,
        -0.0,
        True,
        None,
    ]
    if depth >= 3:
        return rng.choice(scalars)
    roll = rng.random()
    if roll < 0.25:
        return [random_value(rng, depth + 1) for _ in range(rng.randint(0, 4))]
    if roll < 0.4:
        return {rng.choice([*KEYS, "click", "like", "age"]): random_value(rng, depth + 1)}
    if roll < 0.6:
        return [str(rng.randint(0, 2000)) for _ in range(rng.randint(0, 30))]
    return rng.choice(scalars)


def test_random_bodies_never_get_a_5xx(client: TestClient) -> None:
    rng = random.Random(20261130)
    statuses: set[int] = set()
    for _ in range(N_BODIES):
        body = {k: random_value(rng) for k in KEYS if rng.random() < 0.7}
        response = client.post(
            "/predict",
            content=json.dumps(body, allow_nan=True),
            headers={"content-type": "application/json"},
        )
        statuses.add(response.status_code)
        assert response.status_code in (200, 413, 422), (body, response.text)
        if response.status_code != 200:
            ErrorBody.model_validate(response.json())
    assert 422 in statuses
