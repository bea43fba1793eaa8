"""A seeded synthetic log with planted structure, so learning tests have known answers.

Each user has hidden factors z (n_factors, standard normal). They drive everything observable:
which items the user picks (softmax of 4 z . v_item + popularity), whether they like them (the sign
of z . v_item, plus noise), gender (sign of z_0), age (linear in z_1) and occupation (argmax of
a fixed projection of z). A model that reads the history can therefore recover the profile and
rank the held-out items; a broken or untrained one cannot. 5% of profile cells are left empty to
exercise unknown labels.

Items carry planted content: `genres` names the sign of each of the item's factors (`f0+|f1-|...`)
and `year` follows its popularity, so content alone can score an item nobody has touched (the
cold-item learning test); 5% of years are empty, to exercise missing values.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from training.config import SyntheticConfig
from training.data.raw import RawTable

OCCUPATIONS = ("artist", "engineer", "student", "teacher", "writer")
EMPTY_FRACTION = 0.05
AFFINITY_SCALE = 4.0  # how strongly taste (vs popularity and chance) decides what is picked


def generate(cfg: SyntheticConfig) -> dict[str, RawTable]:
    """Raw tables of a synthetic log (see module docstring)."""
    rng = np.random.default_rng(cfg.seed)
    z = rng.standard_normal((cfg.n_users, cfg.n_factors))  # [U, F]
    v = rng.standard_normal((cfg.n_items, cfg.n_factors))  # [I, F]
    popularity = rng.standard_normal(cfg.n_items)
    affinity = z @ v.T / np.sqrt(cfg.n_factors)  # [U, I]

    rows = [_user_interactions(rng, u, affinity[u], popularity, cfg) for u in range(cfg.n_users)]
    inter = pd.concat(rows, ignore_index=True)
    users = users_frame(rng, z, [f"u{u}" for u in range(cfg.n_users)])
    items = items_frame(rng, v, popularity, [f"i{i}" for i in range(cfg.n_items)])
    return {
        "interactions": RawTable(inter, "synthetic interactions"),
        "users": RawTable(users, "synthetic users"),
        "items": RawTable(items, "synthetic items"),
    }


def users_frame(
    rng: np.random.Generator, z: np.ndarray, ids: list[str], projection: np.ndarray | None = None
) -> pd.DataFrame:
    """The users table of factors z [U, F]: gender, age and occupation read off z, 5% of each
    cell empty. `projection` [F, K] maps z to the occupation (drawn here when not given; a
    generator writing users in chunks passes one, so every chunk uses the same)."""
    n, n_factors = z.shape
    gender_noise, age_noise = rng.standard_normal(n), rng.standard_normal(n)
    if projection is None:
        projection = rng.standard_normal((n_factors, len(OCCUPATIONS)))
    users = pd.DataFrame(
        {
            "user_id": ids,
            "gender": np.where(z[:, 0] + 0.3 * gender_noise > 0, "M", "F"),
            "age": np.clip(36 + 12 * z[:, 1] + 3 * age_noise, 15, 75).astype(int).astype(str),
            "occupation": np.array(OCCUPATIONS)[np.argmax(z @ projection, axis=1)],
        }
    )
    for column in ("gender", "age", "occupation"):
        users.loc[rng.random(n) < EMPTY_FRACTION, column] = ""
    return users


def items_frame(
    rng: np.random.Generator, v: np.ndarray, popularity: np.ndarray, ids: list[str]
) -> pd.DataFrame:
    """The items table of factors v [I, F]: genres name the signs of the factors, the year
    follows popularity, 5% of years empty."""
    n = len(ids)
    year = (1990 + 8 * popularity + rng.standard_normal(n)).round().astype(int)
    return pd.DataFrame(
        {
            "item_id": ids,
            "title": [f"Item {i}" for i in range(n)],
            "genres": ["|".join(f"f{f}{'+-'[int(x < 0)]}" for f, x in enumerate(row)) for row in v],
            "year": np.where(rng.random(n) < EMPTY_FRACTION, "", year.astype(str)),
        }
    )


def ratings(rng: np.random.Generator, affinity: np.ndarray) -> np.ndarray:
    """A rating per picked item: liked (4-5) when affinity plus noise is positive, else 1-3."""
    n = len(affinity)
    liked = affinity + 0.3 * rng.standard_normal(n) > 0
    return np.where(liked, rng.integers(4, 6, n), rng.integers(1, 4, n))


def _user_interactions(
    rng: np.random.Generator,
    user: int,
    affinity: np.ndarray,
    popularity: np.ndarray,
    cfg: SyntheticConfig,
) -> pd.DataFrame:
    n = int(np.clip(rng.poisson(cfg.n_interactions), 5, cfg.n_items // 2))
    # Gumbel top-n: n draws without replacement from softmax(scale * affinity + popularity).
    scores = AFFINITY_SCALE * affinity + popularity + rng.gumbel(size=cfg.n_items)
    picked = np.argsort(-scores)[:n]
    rating = ratings(rng, affinity[picked])
    timestamp = 1_600_000_000 + np.sort(rng.integers(0, 10_000_000, n))
    return pd.DataFrame(
        {
            "user_id": f"u{user}",
            "item_id": [f"i{i}" for i in picked],
            "timestamp": timestamp.astype(str),
            "rating": rating.astype(str),
        }
    )
