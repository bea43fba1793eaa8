"""The protocol's figures on prepared data (DESIGN.md "Evaluation protocol"): a model's test
metrics with its cold-item ones, and the same for the baselines."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from service.artifact import TaskSpec
from training.config import Config
from training.data.content import ItemContent
from training.data.split import Log
from training.evaluation import cold
from training.evaluation.evaluate import (
    EvalSets,
    Predictor,
    baseline_predictor,
    model_predictor,
    task_metrics,
)
from training.network.recommender import MultiTaskRecommender


class Split(Protocol):
    """What the protocol reads of data ready for a run (training.pipeline.prepare.Prepared)."""

    @property
    def tasks(self) -> Sequence[TaskSpec]: ...
    @property
    def log(self) -> Log: ...
    @property
    def test(self) -> EvalSets: ...
    @property
    def cold_items(self) -> EvalSets | None: ...
    @property
    def content(self) -> ItemContent: ...


def evaluate_model(model: MultiTaskRecommender, data: Split, cfg: Config) -> dict[str, float]:
    """Test metrics of the model under the protocol, cold-item figures included."""
    predict = model_predictor(model, data.log, data.tasks, cfg.network.history_length)
    return protocol_metrics(data, cfg, predict)


def evaluate_baselines(data: Split, cfg: Config) -> dict[str, float]:
    """The same metrics for popularity / item rate / majority-class predictors; on cold items
    the content popularity baseline (ridge on the non-text content)."""
    metrics = task_metrics(
        data.log, data.test, data.tasks, baseline_predictor(data.log, data.tasks), cfg.eval.k
    )
    if data.cold_items is None:
        return metrics
    predict = cold.content_baseline(data.log, data.tasks, data.content.arrays, data.content.inputs)
    figures = task_metrics(data.log, data.cold_items, _item_tasks(data), predict, cfg.eval.k)
    return metrics | {f"{cold.PREFIX}{k}": v for k, v in figures.items()}


def protocol_metrics(data: Split, cfg: Config, predict: Predictor) -> dict[str, float]:
    """The test metrics of a predictor, then its cold-item metrics (prefixed)."""
    metrics = task_metrics(data.log, data.test, data.tasks, predict, cfg.eval.k)
    if data.cold_items is None:
        return metrics
    figures = task_metrics(data.log, data.cold_items, data.tasks, predict, cfg.eval.k)
    return metrics | {f"{cold.PREFIX}{k}": v for k, v in figures.items()}


def _item_tasks(data: Split) -> tuple[TaskSpec, ...]:
    return tuple(t for t in data.tasks if t.level == "item")
