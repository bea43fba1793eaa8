"""Per-task model selection: a tuned head is kept at its own best validation epoch, and the
tasks it does not own do not move."""

from __future__ import annotations

import numpy as np
import pytest

from tests.conftest import tiny_config
from training.config import ConfigError
from training.distributed import Ranks
from training.fit.epoch import validate
from training.fit.head_tuning import tunable
from training.fit.train import fit
from training.pipeline.prepare import prepare
from training.pipeline.run import new_model


@pytest.fixture(scope="module")
def tuned():
    cfg = tiny_config("optim.epochs=2", "optim.head_epochs=3", "optim.patience=3")
    data = prepare(cfg, "synthetic")
    model = new_model(cfg, data)
    history = fit(model, data.log, data.valid, cfg, progress=False)
    return cfg, data, model, history


def test_only_item_tasks_other_than_the_monitors_are_tuned() -> None:
    tasks = prepare(tiny_config(), "synthetic").tasks
    assert [(t.name, m) for t, m in tunable(tasks, "click_auc")] == [("like", "like_auc")]
    assert [t.name for t, _ in tunable(tasks, "loss")] == ["click", "like"]


def test_the_tuned_head_is_kept_at_its_best_validation_epoch(tuned) -> None:
    cfg, data, model, history = tuned
    record = history.heads["like"]
    values = record["values"]
    assert len(values) == 4, "the joint head, then three tuning epochs"
    assert record["kept"] == int(np.argmax(values))
    assert values[0] == history.epochs[history.best_epoch - 1]["val_like_auc"]
    now = validate(model, data.log, data.valid, model.tasks, cfg)
    assert now["val_like_auc"] == pytest.approx(values[record["kept"]], abs=1e-9)


def test_tuning_moves_nothing_the_other_tasks_read(tuned) -> None:
    cfg, data, model, history = tuned
    kept = history.epochs[history.best_epoch - 1]
    now = validate(model, data.log, data.valid, model.tasks, cfg)
    assert now["val_click_auc"] == pytest.approx(kept["val_click_auc"], abs=1e-9)
    assert now["val_loss_gender"] == pytest.approx(kept["val_loss_gender"], abs=1e-7)
    assert all(p.requires_grad for p in model.parameters()), "the freeze is undone"


def test_head_tuning_runs_in_one_process_only() -> None:
    cfg = tiny_config("optim.head_epochs=2")
    data = prepare(cfg, "synthetic")
    two = Ranks(rank=0, world=2, device="cpu")
    with pytest.raises(ConfigError, match="head_epochs"):
        fit(new_model(cfg, data), data.log, data.valid, cfg, progress=False, ranks=two)
