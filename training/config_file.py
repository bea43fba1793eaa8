"""Reading a config: a TOML file plus `--section.key=value` overrides, or a checkpoint's dict,
built into a training.config.Config and validated once (unknown keys, types, values)."""

from __future__ import annotations

import copy
import dataclasses
import json
import re
import tomllib
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from service.artifact import FeatureSpec, TaskSpec
from training.config import (
    BLOCKS,
    DEVICES,
    ENCODERS,
    LR_SCHEDULES,
    WEIGHTINGS,
    Config,
    ConfigError,
    EvalConfig,
    NetworkConfig,
    OptimConfig,
    SyntheticConfig,
)

MODEL_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")

_SECTIONS = {
    "network": NetworkConfig,
    "optim": OptimConfig,
    "eval": EvalConfig,
    "synthetic": SyntheticConfig,
}


def load_config(
    path: Path | dict[str, Any] | None, overrides: list[str] | tuple[str, ...] = ()
) -> Config:
    """Read a TOML config (or take a config's dict form, or the defaults) and apply
    `section.key=value` overrides.

    Raises:
        ConfigError: unknown key, wrong type, invalid task or value.
    """
    raw: dict[str, Any] = {}
    if isinstance(path, dict):
        raw = copy.deepcopy(path)
    elif path is not None:
        try:
            raw = tomllib.loads(Path(path).read_text(encoding="utf-8"))
        except (OSError, tomllib.TOMLDecodeError) as e:
            raise ConfigError(f"{path}: {e}") from None
    for item in overrides:
        _apply_override(raw, item)
    return from_dict(raw)


def from_dict(raw: dict[str, Any]) -> Config:
    """Build and validate a Config from its dict form (a parsed file or a checkpoint)."""
    raw = dict(raw)
    unknown = set(raw) - {"name", "tasks", "features", *_SECTIONS}
    if unknown:
        raise ConfigError(f"unknown config keys: {sorted(unknown)}")
    sections = {key: _section(key, cls, raw.get(key, {})) for key, cls in _SECTIONS.items()}
    tasks = []
    for i, t in enumerate(raw.get("tasks") or _default_tasks()):
        try:
            tasks.append(TaskSpec.model_validate(t))
        except ValidationError as e:
            raise ConfigError(f"tasks[{i}]: {e}") from None
    features = []
    for i, f in enumerate(raw.get("features") or ()):
        try:
            features.append(FeatureSpec.model_validate(f))
        except ValidationError as e:
            raise ConfigError(f"features[{i}]: {e}") from None
    name = raw.get("name", "")
    if not isinstance(name, str) or (name and not MODEL_NAME.fullmatch(name)):
        raise ConfigError(f"name {name!r} must match {MODEL_NAME.pattern} (it names a folder)")
    cfg = Config(name=name, tasks=tasks, features=features, **sections)
    _validate(cfg)
    return cfg


def _section(key: str, cls: type, values: dict[str, Any]) -> Any:
    if not isinstance(values, dict):
        raise ConfigError(f"[{key}] must be a table")
    known = {f.name: f for f in dataclasses.fields(cls)}
    for name, value in values.items():
        if name not in known:
            raise ConfigError(f"unknown key {key}.{name}; known: {sorted(known)}")
        expected = type(getattr(cls(), name))
        ok = isinstance(value, expected) or (expected is float and isinstance(value, int))
        if not ok or (expected is not bool and isinstance(value, bool)):
            raise ConfigError(f"{key}.{name} must be {expected.__name__}, got {value!r}")
    return cls(
        **{k: (float(v) if type(getattr(cls(), k)) is float else v) for k, v in values.items()}
    )


def _apply_override(raw: dict[str, Any], item: str) -> None:
    key, sep, text = item.removeprefix("--").partition("=")
    if not sep or not key:
        raise ConfigError(f"override {item!r} must look like section.key=value")
    try:
        value: Any = json.loads(text)
    except json.JSONDecodeError:
        value = text  # a bare string such as --network.block=mmoe
    *path, last = key.split(".")
    node = raw
    for part in path:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise ConfigError(f"override {key}: {part} is not a section")
    node[last] = value


def _validate(cfg: Config) -> None:
    n, o, e = cfg.network, cfg.optim, cfg.eval
    checks = [
        (n.encoder in ENCODERS, f"network.encoder must be one of {ENCODERS}"),
        (n.block in BLOCKS, f"network.block must be one of {sorted(BLOCKS)}"),
        (n.history_length >= 1, "network.history_length must be >= 1"),
        (n.encoder_length >= 1, "network.encoder_length must be >= 1"),
        (
            min(
                n.d_embedding,
                n.d_hidden,
                n.d_tower,
                n.n_experts,
                n.n_task_experts,
                n.n_levels,
                n.n_heads,
                n.n_layers,
            )
            >= 1,
            "network sizes must be >= 1",
        ),
        (n.d_embedding % n.n_heads == 0, "network.d_embedding must be divisible by n_heads"),
        (0.0 <= n.dropout < 1.0, "network.dropout must be in [0, 1)"),
        (0.0 <= n.profile_item_dropout < 1.0, "network.profile_item_dropout must be in [0, 1)"),
        (
            all(
                0.0 <= r < 1.0
                for r in (n.id_dropout, n.unknown_item_dropout, n.token_dropout, n.content_dropout)
            ),
            "network.id_dropout, unknown_item_dropout, token_dropout, content_dropout must be in"
            " [0, 1)",
        ),
        (
            o.epochs >= 1 and o.batch_size >= 1 and o.lr > 0,
            "optim.epochs/batch_size/lr must be > 0",
        ),
        (o.lr_schedule in LR_SCHEDULES, f"optim.lr_schedule must be one of {LR_SCHEDULES}"),
        (o.n_negatives >= 1 and o.patience >= 1, "optim.n_negatives and patience must be >= 1"),
        (o.user_task_events >= 0, "optim.user_task_events must be >= 0"),
        (o.head_epochs >= 0, "optim.head_epochs must be >= 0 (0 = off)"),
        (o.sampled_softmax >= 0, "optim.sampled_softmax must be >= 0 (0 = binary loss only)"),
        (o.catalogue_softmax >= 0, "optim.catalogue_softmax must be >= 0 (0 = off)"),
        (
            not o.catalogue_softmax or n.item_dot,
            "optim.catalogue_softmax scores the catalogue by the item heads' dot product: set"
            " network.item_dot = true",
        ),
        (0 <= o.calibration_users < 1, "optim.calibration_users must be in [0, 1) (0 = off)"),
        (
            not o.esmm
            or any(t.level == "item" and t.kind == "binary" and t.column for t in cfg.tasks),
            "optim.esmm needs a binary item task with a label column (e.g. like)",
        ),
        (o.weighting in WEIGHTINGS, f"optim.weighting must be one of {WEIGHTINGS}"),
        (o.collective_timeout_s > 0, "optim.collective_timeout_s must be > 0"),
        (o.loader_workers >= 0, "optim.loader_workers must be >= 0"),
        (o.device in DEVICES, f"optim.device must be one of {DEVICES}"),
        (o.max_batches >= 0, "optim.max_batches must be >= 0 (0 = every event)"),
        (o.state_every_batches >= 0, "optim.state_every_batches must be >= 0"),
        (o.grad_cosine_batches >= 0, "optim.grad_cosine_batches must be >= 0 (0 = off)"),
        (o.shuffle_buffer >= 1, "optim.shuffle_buffer must be >= 1"),
        (e.max_users >= 0, "eval.max_users must be >= 0 (0 = every user)"),
        (o.gradnorm_alpha >= 0 and o.gradnorm_lr > 0, "optim.gradnorm_alpha/lr must be >= 0/> 0"),
        (0.0 <= e.holdout_fraction < 1.0, "eval.holdout_fraction must be in [0, 1)"),
        (
            (e.n_folds == 0 and e.fold == 0) or (e.n_folds >= 2 and 0 <= e.fold < e.n_folds),
            "eval.n_folds must be 0 (holdout_fraction) or >= 2, with 0 <= eval.fold < n_folds",
        ),
        (e.n_rank_negatives >= e.k >= 1, "eval.n_rank_negatives must be >= eval.k >= 1"),
        (e.n_click_negatives >= 1, "eval.n_click_negatives must be >= 1"),
        (0.0 <= e.cold_item_fraction < 1.0, "eval.cold_item_fraction must be in [0, 1)"),
        (
            e.cold_item_min_interactions >= 1 and e.n_cold_rank_negatives >= e.k,
            "eval.cold_item_min_interactions must be >= 1, n_cold_rank_negatives >= eval.k",
        ),
        (
            len({f.column for f in cfg.features}) == len(cfg.features),
            "feature columns must be unique",
        ),
        (bool(cfg.tasks), "at least one task is needed"),
        (len({t.name for t in cfg.tasks}) == len(cfg.tasks), "task names must be unique"),
        (
            any(t.interaction for t in cfg.tasks),
            "one item task must be the interaction itself (column unset), e.g. click",
        ),
    ]
    for ok, message in checks:
        if not ok:
            raise ConfigError(message)
    if o.monitor not in (monitors := _monitors(cfg.tasks)):
        raise ConfigError(f"optim.monitor must be one of {monitors}, got {o.monitor!r}")


def _monitors(tasks: list[TaskSpec]) -> list[str]:
    """Validation figures early stopping can follow (user tasks have no validation metric:
    their labels on holdout users are the test set)."""
    names = ["loss", *(f"loss_{t.name}" for t in tasks)]
    for t in tasks:
        if t.level == "item" and t.kind == "regression":
            names.append(f"{t.name}_rmse")
        elif t.level == "item":
            names += [f"{t.name}_auc"] + ([f"{t.name}_logloss"] if t.column else [])
    return names


def _default_tasks() -> list[dict[str, Any]]:
    """The tasks of configs/movielens.toml (a test keeps the two equal)."""
    return [
        {"name": "click", "level": "item", "kind": "binary"},
        {"name": "like", "level": "item", "kind": "binary", "column": "rating", "threshold": 4},
        {
            "name": "gender",
            "level": "user",
            "kind": "multiclass",
            "column": "gender",
            "weight": 0.3,
        },
        {
            "name": "age",
            "level": "user",
            "kind": "multiclass",
            "column": "age",
            "bins": [25, 35, 45, 55],
            "classes": ["<25", "25-34", "35-44", "45-54", "55+"],
            "weight": 0.1,
        },
        {
            "name": "occupation",
            "level": "user",
            "kind": "multiclass",
            "column": "occupation",
            "weight": 0.1,
        },
    ]
