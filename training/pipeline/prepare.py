"""Data ready for a run: `prepare` reads a source (or a folder written by `python -m training
prepare`) into vocabularies, the split, the evaluation sets and item content."""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from service.artifact import TaskSpec
from training.config import Config, ConfigError, model_name
from training.data.content import ItemContent, item_content
from training.data.prepare import is_prepared
from training.data.prepared import Shards, open_prepared, read_manifest
from training.data.raw import RawTable
from training.data.sources import load_tables
from training.data.split import TEST, VALID, Log, build_log, fold_of, whole_log
from training.data.tables import Tables
from training.data.vocab import Vocab, resolve_tasks
from training.evaluation import cold
from training.evaluation.evaluate import (
    EvalSets,
    eval_sets,
)
from training.fit.refit import Whole


@dataclass(frozen=True)
class Prepared:
    """Data ready for training and evaluation."""

    tables: Tables | None  # None for a prepared folder (its tables stay on disk)
    tasks: tuple[TaskSpec, ...]  # classes resolved from the data
    vocabs: dict[str, Vocab]
    log: Log
    valid: EvalSets
    test: EvalSets
    content: ItemContent
    cold_items: EvalSets | None  # the cold-item events (None without cold items)
    shards: Shards | None = None  # a prepared folder's training events, streamed
    whole: Whole | None = None  # a prepared folder's refit: every event, streamed

    def everything(self) -> Whole:
        """All of the data as training events, for the refit (training.fit.refit).

        Raises:
            ConfigError: a prepared folder without the refit's shards (prepare --no-refit).
        """
        if self.whole is not None:
            return self.whole
        if self.tables is None:
            raise ConfigError(
                "this prepared folder has no refit shards (prepare --no-refit): prepare it "
                "again, or train --no-refit"
            )
        users, items = self.vocabs["user_id"], self.vocabs["item_id"]
        return Whole(whole_log(self.tables, users, items, self.tasks), None)


def prepare(cfg: Config, source: str, progress: bool = False) -> Prepared:
    """Load and validate the source, build vocabularies and item content, split, and fix the
    evaluation sets. A folder written by `python -m training prepare` is read as it is."""
    if is_prepared(source):
        return _from_folder(cfg, Path(source), progress)
    tables = load_tables(source, cfg.tasks, cfg.synthetic, cfg.features)
    tasks = resolve_tasks(cfg.tasks, tables)
    vocabs = {
        "user_id": Vocab.build(tables.users["user_id"]),
        "item_id": Vocab.build(tables.items["item_id"]),
    }
    log = build_log(
        tables,
        vocabs["user_id"],
        vocabs["item_id"],
        tasks,
        cfg.eval.holdout_fraction,
        cfg.eval.seed,
        cfg.eval.cold_item_fraction,
        cfg.eval.cold_item_min_interactions,
        fold_of(cfg.eval),
        cfg.optim.calibration_users,
    )
    content = item_content(
        RawTable(tables.items, "items"), cfg.features, vocabs["item_id"], cfg.eval.seed, progress
    )
    return Prepared(
        tables,
        tasks,
        vocabs,
        log,
        eval_sets(log, VALID, cfg.eval),
        eval_sets(log, TEST, cfg.eval),
        content,
        cold.cold_item_sets(log, cfg.eval),
    )


def _from_folder(cfg: Config, folder: Path, progress: bool) -> Prepared:
    """A prepared folder's vocabularies, tasks and evaluation sets; the events stay on disk."""
    prepared = open_prepared(folder, cfg)
    content = item_content(
        RawTable(prepared.items, "items"),
        cfg.features,
        prepared.vocabs["item_id"],
        cfg.eval.seed,
        progress,
    )
    log = prepared.log
    whole = None
    if prepared.refit is not None:  # the evaluation users' log with nothing held out
        shards, trained = prepared.refit
        nothing = np.zeros_like(log.holdout)
        log_all = replace(
            log, holdout=nothing, cold_items=np.zeros_like(log.cold_items), trained_ids=trained
        )
        whole = Whole(log_all, shards)
    return Prepared(
        None,
        prepared.tasks,
        prepared.vocabs,
        log,
        eval_sets(log, VALID, cfg.eval),
        eval_sets(log, TEST, cfg.eval),
        content,
        cold.cold_item_sets(log, cfg.eval),
        prepared.shards,
        whole,
    )


def run_name(cfg: Config, source: str) -> str:
    """The name a run publishes under (config.model_name); a prepared folder's is its own."""
    if not cfg.name and is_prepared(source):
        return str(read_manifest(Path(source))["name"])
    return model_name(cfg, source)
