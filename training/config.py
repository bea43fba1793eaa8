"""Training configuration: a TOML file plus `--section.key=value` overrides, validated once.

Parsed, never executed (nanoGPT's configurator `exec`s files into globals; we do not). The whole
config is saved in the checkpoint and the manifest so an artifact says how it was made.
"""

from __future__ import annotations

import dataclasses
import json
import re
import tomllib
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from service.artifact import FeatureSpec, TaskSpec

ENCODERS = ("mean", "gru", "lstm", "attention")
WEIGHTINGS = ("fixed", "uncertainty", "gradnorm")  # training.weighting
DEVICES = ("auto", "cpu", "cuda")
LR_SCHEDULES = ("constant", "cosine")  # training.schedule


class ConfigError(ValueError):
    """A config file or flag is invalid; the message names the key."""


@dataclass
class SyntheticConfig:
    """Size and seed of the synthetic generator (used with `--data synthetic`)."""

    n_users: int = 600
    n_items: int = 300
    n_interactions: int = 40  # per user, on average
    n_factors: int = 4
    seed: int = 0


@dataclass
class NetworkConfig:
    """Shape of the network; read by `network.recommender.build_model`."""

    encoder: str = "attention"  # mean | gru | lstm | attention
    block: str = "mmoe"  # a key of network.multitask.ARCHITECTURES
    history_length: int = 200  # L: the last L items before an event (the means read them all)
    encoder_length: int = 50  # the sequence encoder reads the last min(this, L) of them
    d_embedding: int = 64
    d_hidden: int = 64  # D: width of each task's representation out of the block
    n_experts: int = 4  # mmoe: experts; ple: shared experts per level
    n_task_experts: int = 1  # ple only: each task's own experts per level
    n_levels: int = 2  # ple only: extraction layers
    n_heads: int = 2  # attention encoder only
    n_layers: int = 1  # attention encoder only
    d_tower: int = 32  # hidden units of each task's tower
    dropout: float = 0.1
    user_embedding: bool = True  # a learned user-id embedding, read by item tasks only
    profile_item_dropout: float = 0.5  # training: share of history items the user tasks miss
    # user heads add a linear map of the pooled profile vector to the tower (wide & deep): what
    # logistic regression on the bag of watched items has, beside the deep path
    wide_profile: bool = True
    # item heads add the dot product of the projected user vector and the item vector to the
    # tower's logit (matrix factorisation's score beside the MLP; see Quality)
    item_dot: bool = True
    # Training: share of item and user ids read as unknown (DropoutNet), so the unknown rows are
    # trained and item content alone must carry an item whose id is unknown.
    id_dropout: float = 0.25
    unknown_item_dropout: float = 0.02  # share of candidates seen as wholly unknown (id, content)
    token_dropout: float = 0.05  # share of categorical tokens read as unknown
    # share of items whose text and vector features are read as missing in training, so the
    # content path cannot memorise the training items by a vector unique to each of them
    content_dropout: float = 0.8


@dataclass
class OptimConfig:
    """Optimisation, sampling and early stopping."""

    epochs: int = 20
    batch_size: int = 256  # events (users x time steps) per batch
    lr: float = 1e-3
    # constant | cosine: from lr at the first epoch down half a cosine to about 0 at `epochs`
    # (training.schedule)
    lr_schedule: str = "constant"
    weight_decay: float = 0.0
    n_negatives: int = 8  # sampled negatives per positive for `click`, fresh each epoch
    # Events per user and epoch that carry the user's profile labels (0 = every event). A user's
    # label repeated on each of their ~100 overlapping history windows is memorised within two
    # epochs; a few random windows per epoch generalise to unseen users.
    user_task_events: int = 2
    # like as p(click and like) = p(click) p(like | click) over every candidate (ESMM), not
    # p(like) over clicked items only; the served `like` stays p(like | click)
    esmm: bool = False
    # weight of a sampled-softmax term in the interaction task's loss: the real item against its
    # own n_negatives in one softmax (training.losses.sampled_softmax_loss), beside the binary
    # loss; 0 = binary only
    sampled_softmax: float = 1.0
    # weight of a full-catalogue softmax term in the interaction task's loss: each event's real
    # item against every item with training interactions, scored by the item head's dot product
    # (training.losses.catalogue_softmax_loss; needs network.item_dot); 0 = off
    catalogue_softmax: float = 0.0
    weighting: str = "uncertainty"  # fixed | uncertainty | gradnorm (training.weighting)
    gradnorm_alpha: float = 1.5  # gradnorm: how hard slow tasks are pulled up
    gradnorm_lr: float = 0.025  # gradnorm: Adam step of the task weights
    patience: int = 3  # epochs without improvement of `monitor` before stopping
    monitor: str = "click_auc"  # a validation metric (higher is better) or `loss` (lower)
    # after the joint fit, tune each other item task's own head alone on the kept body for up
    # to this many epochs, kept at its best validation epoch (training.head_tuning; 0 = off)
    head_epochs: int = 0
    # share of the training users whose profile labels are held back from training to fit a
    # temperature per multiclass user task on afterwards (training.calibration; 0 = off)
    calibration_users: float = 0.0
    seed: int = 0
    # torchrun: how long a collective waits for the other ranks before the run fails (a dead
    # or hung rank ends it with an error instead of a hang)
    collective_timeout_s: float = 300.0
    device: str = "auto"  # auto (a GPU per rank when torch sees one, else the CPU) | cpu | cuda
    # a prepared folder (`train --data PREP`): DataLoader worker processes per rank (0 = read
    # in the training process) and the events each slice is shuffled through
    loader_workers: int = 0
    shuffle_buffer: int = 10_000
    max_batches: int = 0  # batches per epoch at most (0 = every event): epochs of a huge log
    # a prepared folder: also write the training state every this many batches (0 = at the end
    # of each epoch only), so a run of a huge log resumes within its epoch
    state_every_batches: int = 0


@dataclass
class EvalConfig:
    """Evaluation protocol knobs (DESIGN.md "Evaluation protocol")."""

    holdout_fraction: float = 0.2  # users whose profile labels are hidden in training
    # k-fold profile holdout (`python -m training crossval`): with n_folds >= 2 the users are
    # split into n_folds fixed random folds and fold `fold` is the holdout (holdout_fraction is
    # then unused); fold 0 of 5 is the holdout_fraction = 0.2 holdout itself
    n_folds: int = 0
    fold: int = 0
    n_rank_negatives: int = 100
    k: int = 10
    n_click_negatives: int = 4  # negatives per test event for click AUC
    seed: int = 1234
    # Cold items (DESIGN.md): this share of the items with >= cold_item_min_interactions lose
    # every interaction from training and validation; their test figures are the cold ones.
    cold_item_fraction: float = 0.15
    cold_item_min_interactions: int = 5
    n_cold_rank_negatives: int = 99  # HR@k on cold items: the first cold item among 99 others
    # Evaluate the events of a fixed random sample of this many users (0 = every user): a log
    # of a million users is evaluated on a sample, as a figure's interval says how many it took
    max_users: int = 0


@dataclass
class Config:
    """Everything `python -m training train` needs besides the data source and output folder."""

    name: str = ""  # the artifact's name (models/<name>/); empty: see model_name()
    tasks: list[TaskSpec] = field(default_factory=list)
    features: list[FeatureSpec] = field(default_factory=list)  # item features ([[features]])
    network: NetworkConfig = field(default_factory=NetworkConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    synthetic: SyntheticConfig = field(default_factory=SyntheticConfig)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (for the checkpoint and the manifest)."""
        out = asdict(self)
        out["tasks"] = [t.model_dump(mode="json", exclude_defaults=True) for t in self.tasks]
        out["features"] = [f.model_dump(mode="json", exclude_defaults=True) for f in self.features]
        return out


MODEL_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
BUILT_IN_SOURCES = ("movielens", "synthetic")  # named after themselves when the config is not


def model_name(cfg: Config, source: str) -> str:
    """The name a run publishes under: the config's (or --name), else a built-in source's own.

    Raises:
        ConfigError: a user's data folder with no name given; publishing it as `movielens`
            would let a service that polls models/movielens swap it in.
    """
    if cfg.name:
        return cfg.name
    if source in BUILT_IN_SOURCES:
        return source
    raise ConfigError(
        f'name the model trained on {source}: --name NAME, or name = "..." in the config '
        "(it is published as models/<name>/<version>/)"
    )


_SECTIONS = {
    "network": NetworkConfig,
    "optim": OptimConfig,
    "eval": EvalConfig,
    "synthetic": SyntheticConfig,
}


def load_config(path: Path | None, overrides: list[str] | tuple[str, ...] = ()) -> Config:
    """Read a TOML config (or the defaults) and apply `section.key=value` overrides.

    Raises:
        ConfigError: unknown key, wrong type, invalid task or value.
    """
    raw: dict[str, Any] = {}
    if path is not None:
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
    from training.network.multitask import ARCHITECTURES  # torch import only when validating

    n, o, e = cfg.network, cfg.optim, cfg.eval
    checks = [
        (n.encoder in ENCODERS, f"network.encoder must be one of {ENCODERS}"),
        (n.block in ARCHITECTURES, f"network.block must be one of {sorted(ARCHITECTURES)}"),
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
