"""A saved checkpoint (reports/<name>/<version>/checkpoint.pt or heldout.pt) evaluated again or
published as a new artifact, on its own data or another source."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from training.config import Config, ConfigError
from training.config_file import from_dict
from training.evaluation.evaluate import evaluated_users, graph_predictor, model_predictor
from training.evaluation.full_catalogue import Figures, full_catalogue
from training.evaluation.protocol import evaluate_baselines, evaluate_model, protocol_metrics
from training.evaluation.retrieval import retrieval_scorer
from training.fit.train import load_checkpoint
from training.network.recommender import MultiTaskRecommender
from training.pipeline.prepare import Prepared, prepare
from training.pipeline.run import parity_inputs
from training.publish.export import export_artifact


def from_checkpoint(
    checkpoint: Path, data: str | None
) -> tuple[MultiTaskRecommender, dict[str, Any], Config, Prepared]:
    """The checkpoint's model, raw dict, config, and its data (or `data`) prepared again."""
    model, raw = load_checkpoint(checkpoint)
    stored = dict(raw["config"])
    source = str(stored.pop("data"))
    cfg = from_dict(stored)
    return model, raw, cfg, prepare(cfg, data or source)


def is_refit(raw: dict[str, Any]) -> bool:
    """Whether a checkpoint's weights were refit on all of their data (training.fit.refit)."""
    return bool(raw.get("fit", {}).get("refit"))


@dataclass(frozen=True)
class Evaluated:
    """A checkpoint's figures on a split: the protocol's, and the full-catalogue ranking's."""

    title: str
    metrics: dict[str, float]
    baselines: dict[str, float]
    full: Figures  # each user's first test item among every item, by scorer
    cold: Figures | None  # each user's first cold item among every item


def evaluate_checkpoint(checkpoint: Path, data: str | None) -> Evaluated:
    """The protocol's test figures of a checkpoint and of the baselines, and where each user's
    first test item and first cold item land among every item
    (training.evaluation.full_catalogue).

    Raises:
        ConfigError: a refit checkpoint on its own data, where its test split was training data.
    """
    model, raw, cfg, prepared = from_checkpoint(checkpoint, data)
    if is_refit(raw) and data in (None, raw["config"]["data"]):
        raise ConfigError(
            f"{checkpoint} was refit on all of {raw['config']['data']}, its test split "
            "included: its figures there would be measured on training data. Evaluate the "
            "held-out checkpoint beside it (heldout.pt), or give --data another source"
        )
    title = f"{checkpoint} on {data or raw['config']['data']} (test split)"
    log, tasks, length = prepared.log, prepared.tasks, cfg.network.history_length
    keep = evaluated_users(log, cfg.eval)
    users = None if keep is None else np.flatnonzero(keep)
    retrieve = None if model.retrieval_task is None else retrieval_scorer(model, log, tasks, length)
    predict = model_predictor(model, log, tasks, length)
    full, cold = full_catalogue(log, tasks, predict, users, retrieve=retrieve)
    return Evaluated(
        title, evaluate_model(model, prepared, cfg), evaluate_baselines(prepared, cfg), full, cold
    )


def export_checkpoint(
    checkpoint: Path,
    out: Path,
    data: str | None = None,
    version: int | None = None,
    quantize: str | None = None,
) -> tuple[Path, dict[str, float]]:
    """Publish a checkpoint as `out/<name>/<version>/`; the artifact and the float32 figures it
    carries (a refit's: the held-out estimate stored with it).

    Raises:
        ConfigError: `quantize` of a refit, whose quantised figures would be measured on its
            training data.
    """
    model, raw, cfg, prepared = from_checkpoint(checkpoint, data)
    fit = raw.get("fit")
    if is_refit(raw):
        if quantize:
            raise ConfigError(
                f"{checkpoint} was refit on all of the data: a quantised graph's figures "
                "would be measured on its training data; quantise the held-out checkpoint "
                "(heldout.pt) to see what int8 costs"
            )
        metrics = raw["estimate"]["metrics"]  # the evaluated run's: the refit's estimate
        details = {**raw["estimate"], "training": raw["config"], "fit": fit}
    else:
        metrics = evaluate_model(model, prepared, cfg)
        details = {
            "metrics": metrics,
            "baselines": evaluate_baselines(prepared, cfg),
            "training": raw["config"] | ({"quantize": quantize} if quantize else {}),
            "fit": fit,
        }

    def describe(graph: Path) -> dict[str, object]:
        """The quantised graph's own figures under the protocol."""
        predict = graph_predictor(graph, prepared.log, prepared.tasks, cfg.network.history_length)
        return {"metrics": protocol_metrics(prepared, cfg, predict)}

    target = export_artifact(
        model,
        prepared.vocabs,
        prepared.content,
        parity_inputs(prepared, cfg),
        out,
        cfg.name,
        details,
        version=version,
        quantize=quantize,
        describe=describe if quantize else None,
    )
    return target, metrics
