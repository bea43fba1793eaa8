"""`python -m training synthesize`: the synthetic log at any size, as Parquet shards.

The same planted structure as `--data synthetic` (training.data.synthetic): hidden user factors
drive which items are picked (taste and popularity), the ratings, gender, age and occupation;
item factors drive the genres, popularity the year. Written in chunks of users, so memory stays
bounded whatever the size: the item factors (I x F floats) plus one chunk's scores. Within a
chunk each user picks among a random pool of `POOL` items (Gumbel top-n over the pool instead of
over every item, which would cost users x items), a fresh pool per chunk, so every item can be
picked and taste still decides among what is offered.

Layout (what `--data DIR` reads): `interactions/part-00000.parquet, ...` (user_id, item_id
int64, timestamp int64 Unix seconds, rating int64), `users/part-*.parquet`,
`items/part-00000.parquet`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from tqdm import tqdm

from training.data.raw import DataError
from training.data.synthetic import (
    AFFINITY_SCALE,
    OCCUPATIONS,
    items_frame,
    ratings,
    users_frame,
)

POOL = 2000  # items a chunk of users picks among
CHUNK_USERS = 2000  # users per chunk: POOL x CHUNK_USERS scores (32 MB in float64) at a time
MIN_PER_USER = 5


@dataclass(frozen=True)
class Size:
    """How big a log to write."""

    users: int
    items: int
    interactions: int  # in all, about (each user's count is Poisson around the mean)
    factors: int = 8
    seed: int = 0
    shard_rows: int = 1_000_000  # interactions per shard (about: whole chunks of users)


def synthesize(size: Size, out: Path, progress: bool = True) -> dict[str, int]:
    """Write the tables under `out`; returns the rows written per table.

    Raises:
        DataError: sizes that cannot make a log (too few items for a user's picks), or an
            `out` that already holds tables.
    """
    mean = size.interactions / max(1, size.users)
    if size.users < 1 or size.items < 2 * MIN_PER_USER or mean < 1:
        raise DataError(
            f"synthesize: need users >= 1, items >= {2 * MIN_PER_USER} and at least one "
            f"interaction per user (got {size.users}, {size.items}, {size.interactions})"
        )
    if any((out / name).exists() for name in ("interactions", "users", "items")):
        raise DataError(f"{out}: already holds tables; write to a new folder")
    rng = np.random.default_rng(size.seed)
    v = rng.standard_normal((size.items, size.factors)).astype(np.float32)
    popularity = rng.standard_normal(size.items).astype(np.float32)
    projection = rng.standard_normal((size.factors, len(OCCUPATIONS)))
    items = items_frame(rng, v, popularity, [str(i) for i in range(size.items)])
    items["item_id"] = items["item_id"].astype(np.int64)
    _write(items, out / "items" / "part-00000.parquet")

    pool_size = min(POOL, size.items)
    cap = max(MIN_PER_USER, pool_size // 2)
    written = {"interactions": 0, "users": 0, "items": size.items}
    shard: list[pd.DataFrame] = []
    n_shards = 0
    starts = range(0, size.users, CHUNK_USERS)
    for start in tqdm(starts, desc="synthesize", unit="chunk", disable=not progress):
        users = np.arange(start, min(start + CHUNK_USERS, size.users))
        z = rng.standard_normal((len(users), size.factors)).astype(np.float32)
        chunk = _interactions(rng, users, z, v, popularity, mean, pool_size, cap)
        profile = users_frame(rng, z, [str(u) for u in users], projection)
        profile["user_id"] = users
        _write(profile, out / "users" / f"part-{start // CHUNK_USERS:05d}.parquet")
        written["users"] += len(users)
        shard.append(chunk)
        if sum(len(c) for c in shard) >= size.shard_rows or users[-1] == size.users - 1:
            rows = pd.concat(shard, ignore_index=True)
            _write(rows, out / "interactions" / f"part-{n_shards:05d}.parquet")
            written["interactions"] += len(rows)
            n_shards, shard = n_shards + 1, []
    return written


def _interactions(
    rng: np.random.Generator,
    users: np.ndarray,
    z: np.ndarray,
    v: np.ndarray,
    popularity: np.ndarray,
    mean: float,
    pool_size: int,
    cap: int,
) -> pd.DataFrame:
    """Each user's picks among one random pool of items, with ratings and times."""
    pool = rng.choice(len(v), size=pool_size, replace=False)
    affinity = z @ v[pool].T / np.float32(np.sqrt(v.shape[1]))  # [C, P]
    scores = AFFINITY_SCALE * affinity + popularity[pool] + rng.gumbel(size=affinity.shape)
    counts = np.clip(rng.poisson(mean, len(users)), MIN_PER_USER, cap)
    top = np.argpartition(-scores, cap - 1, axis=1)[:, :cap]  # the cap best, unordered
    order = np.take_along_axis(scores, top, axis=1).argsort(axis=1)[:, ::-1]
    best = np.take_along_axis(top, order, axis=1)  # [C, cap], best first
    keep = np.arange(cap)[None, :] < counts[:, None]
    rows, cols = np.nonzero(keep)
    picked = best[rows, cols]
    timestamp = 1_600_000_000 + rng.integers(0, 10_000_000, len(rows))
    frame = pd.DataFrame(
        {
            "user_id": users[rows].astype(np.int64),
            "item_id": pool[picked].astype(np.int64),
            "timestamp": timestamp.astype(np.int64),
            "rating": ratings(rng, affinity[rows, picked]).astype(np.int64),
        }
    )
    return frame.sort_values(["user_id", "timestamp"], kind="stable", ignore_index=True)


def _write(frame: pd.DataFrame, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pandas(frame, preserve_index=False), path)
