"""Config file + overrides: parsed, typed, validated with messages that name the key."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import pytest

from training.config import ConfigError
from training.config_file import from_dict, load_config

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("name", ["movielens.toml", "reference.toml"])
def test_committed_configs_load(name: str) -> None:
    cfg = load_config(ROOT / "configs" / name)
    assert cfg.tasks[0].name == "click"


def test_reference_design_is_a_config() -> None:
    cfg = load_config(ROOT / "configs" / "reference.toml")
    assert (cfg.network.encoder, cfg.network.block, cfg.network.d_tower) == (
        "lstm",
        "shared_bottom",
        32,
    )
    assert [(t.name, len(t.classes)) for t in cfg.tasks] == [("click", 0), ("age", 5)]


def test_overrides_are_typed_and_nested() -> None:
    cfg = load_config(
        None,
        [
            "--optim.epochs=3",
            "network.block=shared_bottom",
            "optim.lr=0.01",
            "network.user_embedding=false",
        ],
    )
    assert cfg.optim.epochs == 3
    assert cfg.network.block == "shared_bottom"
    assert cfg.optim.lr == pytest.approx(0.01)
    assert cfg.network.user_embedding is False


def test_int_is_accepted_where_float_is_expected() -> None:
    assert load_config(None, ["optim.lr=1"]).optim.lr == 1.0


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("optim.epoch=3", "unknown key optim.epoch"),
        ("optim.epochs=three", "optim.epochs must be int"),
        ("network.user_embedding=1", "network.user_embedding must be bool"),
        ("network.block=transformer", "network.block must be one of"),
        ("network.encoder=cnn", "network.encoder must be one of"),
        ("optim.epochs=0", "optim.epochs/batch_size/lr must be > 0"),
        ("eval.n_rank_negatives=5", "eval.n_rank_negatives must be >= eval.k"),
        ("optim.monitor=accuracy", "optim.monitor"),
        ("optim.head_epochs=-1", "optim.head_epochs must be >= 0"),
        ("optim.sampled_softmax=-1", "optim.sampled_softmax must be >= 0"),
        ("optim.catalogue_softmax=-1", "optim.catalogue_softmax must be >= 0"),
        ("network.item_dot=false optim.catalogue_softmax=1", "set network.item_dot = true"),
        ("optim.calibration_users=1", "optim.calibration_users must be in [0, 1)"),
        ("eval.n_folds=1", "eval.n_folds must be 0"),
        ("eval.fold=5", "0 <= eval.fold < n_folds"),
        ("colour=red", "unknown config keys: ['colour']"),
        ("optim.epochs", "must look like section.key=value"),
    ],
)
def test_bad_overrides_name_the_key(override: str, message: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(message)):
        load_config(None, override.split())


@pytest.mark.parametrize(
    ("task", "message"),
    [
        ({"name": "Like", "level": "item", "kind": "binary"}, "must match"),
        (
            {"name": "x", "level": "item", "kind": "multiclass"},
            "item tasks are binary or regression",
        ),
        (
            {"name": "x", "level": "user", "kind": "binary", "column": "g"},
            "user tasks are multiclass or multilabel",
        ),
        ({"name": "x", "level": "user", "kind": "multiclass"}, "needs a label column"),
        ({"name": "x", "level": "item", "kind": "binary", "column": "rating"}, "needs a threshold"),
        (
            {
                "name": "x",
                "level": "user",
                "kind": "multiclass",
                "column": "age",
                "bins": [30],
                "classes": ["young"],
            },
            "1 bins need 2 classes",
        ),
        (
            {
                "name": "x",
                "level": "user",
                "kind": "multiclass",
                "column": "age",
                "bins": [30, 20],
                "classes": ["a", "b", "c"],
            },
            "strictly increasing",
        ),
        ({"name": "x", "level": "item", "kind": "binary", "weight": -1}, "greater than or equal"),
    ],
)
def test_invalid_task_specs(task: dict[str, object], message: str) -> None:
    raw = {"tasks": [{"name": "click", "level": "item", "kind": "binary"}, task]}
    with pytest.raises(ConfigError, match=message):
        from_dict(raw)


def test_an_interaction_task_is_required() -> None:
    raw = {
        "tasks": [
            {"name": "like", "level": "item", "kind": "binary", "column": "rating", "threshold": 4}
        ]
    }
    with pytest.raises(ConfigError, match="one item task must be the interaction itself"):
        from_dict(raw)


def test_bad_toml_file(tmp_path: Path) -> None:
    path = tmp_path / "bad.toml"
    path.write_text("[network\nencoder = 'gru'\n")
    with pytest.raises(ConfigError, match="bad.toml"):
        load_config(path)


def test_round_trip_through_dict() -> None:
    cfg = load_config(None, ["optim.epochs=2", "network.encoder=gru"])
    assert from_dict(cfg.to_dict()) == cfg


def test_builtin_defaults_are_the_committed_default_config() -> None:
    """Except the item features: they name columns of an items table, so the built-in defaults
    declare none and the MovieLens config declares its own; and except the name."""
    committed = load_config(ROOT / "configs" / "movielens.toml")
    assert [(f.column, f.kind) for f in committed.features] == [
        ("genres", "multi_categorical"),
        ("year", "numeric"),
        ("title", "text"),
    ]
    # and the name: the built-in defaults name no model (a run is named after its source)
    assert load_config(None) == dataclasses.replace(committed, features=[], name="")
