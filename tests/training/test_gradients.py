"""The task losses' gradient cosines on the shared parameters: exact on losses whose answer is
known, taken on the parameters every task reads, and recorded per epoch by training."""

from __future__ import annotations

import itertools

import pytest
import torch

from service.artifact import TaskSpec
from training.config import NetworkConfig
from training.fit.gradients import PREFIX, CosineProbe, gradient_cosines, shared_parameters
from training.network.multitask import task_parameters
from training.network.recommender import ModelArgs, MultiTaskRecommender

TASKS = [
    TaskSpec(name="click", level="item", kind="binary"),
    TaskSpec(name="like", level="item", kind="binary", column="rating", threshold=4),
    TaskSpec(name="gender", level="user", kind="multiclass", column="gender", classes=("F", "M")),
]


def model(block: str) -> MultiTaskRecommender:
    net = NetworkConfig(encoder="attention", block=block, history_length=6, d_embedding=8,
                        d_hidden=8, n_experts=2, d_tower=4)  # fmt: skip
    return MultiTaskRecommender(ModelArgs(n_users=5, n_items=12, network=net, tasks=TASKS))


def test_the_same_loss_gives_one_its_negation_minus_one_and_no_gradient_is_left_out() -> None:
    w = torch.nn.Parameter(torch.tensor([1.0, -2.0, 0.5]))
    other = torch.nn.Parameter(torch.ones(2))
    loss = (w**2).sum() + (w * 3).sum()
    cosines = gradient_cosines(
        {"a": loss, "b": 2 * loss, "c": -loss, "d": torch.tensor(0.0), "e": other.sum()}, [w]
    )
    assert cosines == pytest.approx(
        {f"{PREFIX}a/b": 1.0, f"{PREFIX}a/c": -1.0, f"{PREFIX}b/c": -1.0}
    )
    assert w.grad is None  # nothing accumulated: the training step's backward is untouched


def test_orthogonal_gradients_have_cosine_zero() -> None:
    w = torch.nn.Parameter(torch.zeros(2))
    cosines = gradient_cosines({"x": w[0] * 3, "y": w[1] * -5}, [w])
    assert cosines == {f"{PREFIX}x/y": 0.0}


@pytest.mark.parametrize("block", ["shared_bottom", "mmoe", "ple"])
def test_the_shared_parameters_are_the_encoders_and_the_blocks_no_task_owns(block: str) -> None:
    net = model(block)
    shared = {id(p) for p in shared_parameters(net)}
    assert {id(p) for p in net.encoder.parameters()} <= shared
    for i, task in enumerate(TASKS):
        assert not shared & {id(p) for p in task_parameters(net.block, i)}
        assert not shared & {id(p) for p in net.heads[task.name].parameters()}
    assert shared & {id(p) for p in net.block.parameters()}  # the experts every task mixes
    assert not shared & {id(p) for p in net.items.parameters()}


def test_the_probe_takes_every_interval_th_batch_and_averages() -> None:
    probe = CosineProbe(model("mmoe"), batches=4, n_batches=10)
    assert [s for s in range(1, 11) if probe.wants(s)] == [2, 4, 6, 8, 10]
    assert not any(CosineProbe(model("mmoe"), 0, 10).wants(s) for s in range(1, 11))
    w = torch.nn.Parameter(torch.ones(2))
    probe.params = [w]
    probe.probe({"a": w.sum(), "b": w.sum()})
    probe.probe({"a": w.sum(), "b": -w.sum()})
    assert probe.figures() == pytest.approx({f"{PREFIX}a/b": 0.0})


def test_training_records_every_pairs_cosine_per_epoch(trained) -> None:
    result, _ = trained
    tasks = ["click", "like", "gender", "age", "occupation"]
    for epoch in result.history.epochs:
        recorded = {k: v for k, v in epoch.items() if k.startswith(PREFIX)}
        assert set(recorded) == {f"{PREFIX}{a}/{b}" for a, b in itertools.combinations(tasks, 2)}
        assert all(-1.0 <= v <= 1.0 for v in recorded.values())


def test_nothing_shared_means_nothing_probed() -> None:
    w = torch.nn.Parameter(torch.ones(2))
    assert gradient_cosines({"a": w.sum(), "b": w.sum()}, []) == {}
    probe = CosineProbe(model("mmoe"), batches=4, n_batches=10)
    probe.params = []
    assert gradient_cosines({"a": w.sum()}, probe.params) == {}
