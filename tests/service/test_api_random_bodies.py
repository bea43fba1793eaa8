"""Seeded random bodies: each answer is a 200 or a documented 4xx with an ErrorBody, never a 5xx."""

from __future__ import annotations

import json
import math
import random

from fastapi.testclient import TestClient

from service.schemas import ErrorBody, PredictResponse

KEYS = ["user_id", "history", "candidates", "top_k", "weights", "explain", "other"]
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


def valid_body(rng: random.Random) -> dict[str, object]:
    """A body that passes validation: real and unknown ids, sometimes top_k and weights."""
    body: dict[str, object] = {
        "user_id": rng.choice(["196", "1", "nobody"]),
        "history": [str(rng.randint(0, 2000)) for _ in range(rng.randint(0, 300))],
        "candidates": [str(i) for i in rng.sample(range(2000), rng.randint(1, 50))],
    }
    if rng.random() < 0.5:
        body["top_k"] = rng.randint(1, 60)
    if rng.random() < 0.5:
        body["weights"] = {
            t: rng.uniform(-1e6, 1e6) for t in ("click", "like") if rng.random() < 0.7
        }
    if rng.random() < 0.2:
        body["explain"] = True
    return body


def random_body(rng: random.Random) -> dict[str, object]:
    """Half of them valid bodies with one field, sometimes, replaced by something random (so
    the pipeline itself is exercised), half random throughout."""
    if rng.random() < 0.5:
        body = valid_body(rng)
        if rng.random() < 0.4:
            body[rng.choice(KEYS)] = random_value(rng)
        return body
    return {k: random_value(rng) for k in KEYS if rng.random() < 0.7}


def test_random_bodies_never_get_a_5xx(client: TestClient) -> None:
    rng = random.Random(20261130)
    statuses: list[int] = []
    explained = 0
    for _ in range(N_BODIES):
        body = random_body(rng)
        response = client.post(
            "/predict",
            content=json.dumps(body, allow_nan=True),
            headers={"content-type": "application/json"},
        )
        statuses.append(response.status_code)
        assert response.status_code in (200, 413, 422), (body, response.text)
        if response.status_code == 200:  # every number finite (null is not a number)
            answer = PredictResponse.model_validate_json(response.content)
            numbers = [
                v for i in answer.items for v in i.model_dump(exclude={"item_id", "why"}).values()
            ]
            explained += answer.user.why is not None
            for item in answer.items:  # explained: every part and change finite too
                if item.why is not None:
                    numbers += list(item.why.score.values())
                    numbers += [e.change for effects in item.why.history.values() for e in effects]
            assert all(isinstance(v, float) and math.isfinite(v) for v in numbers), numbers
        else:
            ErrorBody.model_validate(response.json())
    assert statuses.count(422) > N_BODIES // 4
    assert statuses.count(200) > N_BODIES // 4, "too few bodies reached the model"
    assert explained > 10, "too few explained answers"
