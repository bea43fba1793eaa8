"""The README's configuration table and metrics list cover what the service really has."""

from __future__ import annotations

from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from service.config import ENV_PREFIX, Settings
from service.metrics import Metrics

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
