"""The source dispatcher: `movielens`, `synthetic` or a folder, read and validated as Tables."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from service.artifact import FeatureSpec, TaskSpec
from training.config import SyntheticConfig
from training.data.raw import RawTable
from training.data.tables import Tables, parse_tables


def load_tables(
    source: str,
    tasks: Sequence[TaskSpec],
    synthetic: SyntheticConfig | None = None,
    features: Sequence[FeatureSpec] = (),
) -> Tables:
    """Read and validate the tables of a source: `movielens`, `synthetic` or a directory path.

    Args:
        source: `movielens`, `synthetic`, or a folder with interactions/users/items CSV or Parquet.
        tasks: The task specs, whose label columns must exist.
        synthetic: A `SyntheticConfig` for the synthetic source.
        features: The item features, whose columns must exist and hold valid values.
    """
    return parse_tables(raw_tables(source, synthetic), tasks, features)


def raw_tables(source: str, synthetic: SyntheticConfig | None = None) -> dict[str, RawTable]:
    """The three tables of a source as read, before validation."""
    if source == "movielens":
        from training.data.movielens import read_movielens

        return read_movielens()
    if source == "synthetic":
        from training.data.synthetic import generate

        return generate(synthetic or SyntheticConfig())
    from training.data.directory import read_directory

    return read_directory(Path(source))
