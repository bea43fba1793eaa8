"""Loss weighting: fixed is DESIGN.md's joint loss, uncertainty and GradNorm move the weights the
way their papers say, absent tasks never drive them, and every scheme trains end to end."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from service.artifact import TaskSpec
from tests.conftest import tiny_config
from training.config import WEIGHTINGS
from training.fit.losses import task_losses, weighted_sum
from training.fit.train import fit
from training.fit.weighting import GradNormWeighting, UncertaintyWeighting, build_weighting
from training.pipeline.prepare import prepare
from training.pipeline.run import new_model

TASKS = (
    TaskSpec(name="a", level="item", kind="binary", weight=1.0),
    TaskSpec(name="b", level="item", kind="binary", weight=0.5),
)


def test_fixed_is_the_joint_loss() -> None:
    logits = {"a": torch.randn(5), "b": torch.randn(5)}
    labels = {"a": torch.ones(5), "b": torch.zeros(5)}
    masks = {"a": torch.ones(5, dtype=torch.bool), "b": torch.tensor([1, 0, 1, 0, 0]).bool()}
    per_task = task_losses(TASKS, logits, labels, masks)
    total = weighted_sum(TASKS, per_task)
    fixed = build_weighting("fixed", TASKS)
    assert torch.allclose(fixed.combine(per_task, {"a", "b"}), total)
    assert fixed.weights() == {"a": 1.0, "b": 0.5}


def test_uncertainty_learns_weights_inverse_to_the_loss() -> None:
    """With constant losses L_i, lambda (exp(-s) L + s/2) is minimal at exp(-s) = 1 / (2 L)."""
    scheme = UncertaintyWeighting(TASKS)
    optimizer = torch.optim.Adam(scheme.trained_with_model(), lr=0.05)
    losses = {"a": torch.tensor(2.0), "b": torch.tensor(0.25)}
    for _ in range(800):
        optimizer.zero_grad()
        scheme.backward(losses, {"a", "b"}, [])
        optimizer.step()
    weights = scheme.weights()
    assert weights["a"] == pytest.approx(1.0 / (2 * 2.0), rel=0.05)
    assert weights["b"] == pytest.approx(0.5 / (2 * 0.25), rel=0.05)


def test_uncertainty_leaves_an_absent_task_alone() -> None:
    scheme = UncertaintyWeighting(TASKS)
    scheme.backward({"a": torch.tensor(1.0), "b": torch.tensor(0.0)}, {"a"}, [])
    assert scheme.log_vars.grad is not None
    assert scheme.log_vars.grad[0] != 0
    assert scheme.log_vars.grad[1] == 0


def test_gradnorm_shifts_weight_to_the_task_with_the_weaker_gradient() -> None:
    """Task a's loss is scaled up 10x, so its gradient on the shared layer is 10x larger at equal
    weights; GradNorm moves weight to b, keeps the sum of the lambdas and the weights positive,
    and the model's gradient is exactly that of the weighted sum at the current weights."""
    torch.manual_seed(0)
    shared = nn.Linear(4, 4)
    heads = nn.ModuleList(nn.Linear(4, 1) for _ in range(2))
    scheme = GradNormWeighting(TASKS, alpha=1.5, lr=0.05)
    x, y = torch.randn(64, 4), torch.randn(64, 1)
    for _ in range(100):
        h = shared(x)
        losses = {
            "a": 10 * nn.functional.mse_loss(heads[0](h), y),
            "b": nn.functional.mse_loss(heads[1](h), y),
        }
        w = scheme.w.detach()
        expected = torch.autograd.grad(
            w[0] * losses["a"] + w[1] * losses["b"], shared.weight, retain_graph=True
        )[0]
        shared.zero_grad()
        scheme.backward(losses, {"a", "b"}, list(shared.parameters()))
        assert torch.allclose(shared.weight.grad, expected, atol=1e-6)
        scheme.step()
    w = scheme.weights()
    assert 0 < w["a"] < 1.0  # started at lambda_a = 1.0
    assert w["b"] > 0.5  # started at lambda_b = 0.5
    assert w["b"] > w["a"]
    assert math.isclose(w["a"] + w["b"], 1.5, rel_tol=1e-5)


@pytest.mark.parametrize("name", WEIGHTINGS)
def test_every_scheme_trains_and_logs_its_weights(name: str) -> None:
    cfg = tiny_config(f"optim.weighting={name}")
    data = prepare(cfg, "synthetic")
    history = fit(new_model(cfg, data), data.log, data.valid, cfg, progress=False)
    figures = history.epochs[-1]
    weights = {t.name: figures[f"weight_{t.name}"] for t in data.tasks}
    assert all(math.isfinite(w) and w > 0 for w in weights.values())
    assert math.isfinite(figures["train_loss"])
    moved = [not math.isclose(weights[t.name], t.weight, rel_tol=1e-6) for t in data.tasks]
    assert any(moved) == (name != "fixed")


def test_esmm_trains() -> None:
    cfg = tiny_config("optim.esmm=true")
    data = prepare(cfg, "synthetic")
    history = fit(new_model(cfg, data), data.log, data.valid, cfg, progress=False)
    assert math.isfinite(history.epochs[-1]["train_loss_like"])
    assert math.isfinite(history.epochs[-1]["val_like_auc"])
