"""The README's configuration tables and metrics list cover what the service and the training
config really have."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from service.config import ENV_PREFIX, Settings
from service.metrics import Metrics
from training.config import EvalConfig, NetworkConfig, OptimConfig, SyntheticConfig

README = (Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")


def test_every_setting_is_documented() -> None:
    for name in Settings.model_fields:
        assert f"`{ENV_PREFIX}{name.upper()}`" in README, name


def test_every_metric_is_documented() -> None:
    metrics = Metrics()
    metrics.start_handler("/predict", "POST")
    text = metrics.render()[0].decode()
    for family in text_string_to_metric_families(text):
        exposed = family.name + ("_total" if family.type == "counter" else "")
        documented = "process_*" if exposed.startswith("process_") else exposed
        assert f"`{documented}`" in README, exposed


@pytest.mark.parametrize(
    ("section", "cls"),
    [
        ("network", NetworkConfig),
        ("optim", OptimConfig),
        ("eval", EvalConfig),
        ("synthetic", SyntheticConfig),
    ],
)
def test_every_training_key_is_documented(section: str, cls: type) -> None:
    for field in dataclasses.fields(cls):
        # rows name a key in full (`optim.seed`) or after the first of a group (`, lr`)
        assert f"`{section}.{field.name}`" in README or f"`{field.name}`" in README, field.name
