"""`python -m training relatedness`: gate weights read out of an exported graph equal the
network's own gates, leave-one-task-out runs drop exactly one task, and the study runs end to
end on a trained synthetic artifact (real training runs, a real onnxruntime session)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from service.artifact import PAD, TaskSpec
from service.repository import list_versions
from training.config import NetworkConfig
from training.network.recommender import ModelArgs, MultiTaskRecommender
from training.publish.export import export_onnx
from training.studies.experiment import Base, Variant, variant_config
from training.studies.gates import gate_weights
from training.studies.relatedness_report import overlap, verdict

TASKS = [
    TaskSpec(name="click", level="item", kind="binary"),
    TaskSpec(name="like", level="item", kind="binary", column="rating", threshold=4),
    TaskSpec(name="age", level="user", kind="multiclass", column="age", classes=("a", "b", "c")),
]
L = 6


def network(block: str) -> MultiTaskRecommender:
    torch.manual_seed(0)
    net = NetworkConfig(encoder="attention", block=block, history_length=L, d_embedding=8,
                        d_hidden=8, n_experts=3, d_tower=4, user_embedding=True)  # fmt: skip
    return MultiTaskRecommender(ModelArgs(n_users=6, n_items=15, network=net, tasks=TASKS)).eval()


def users(n: int) -> tuple[torch.Tensor, torch.Tensor]:
    rng = np.random.default_rng(5)
    history = rng.integers(2, 15, (n, L))
    history[0, :4] = PAD
    return torch.tensor(rng.integers(2, 6, n)), torch.tensor(history)


@pytest.mark.parametrize("block", ["mmoe", "ple"])
def test_the_graphs_gates_are_the_networks_own(block: str, tmp_path: Path) -> None:
    """Each task's gate read from the exported graph equals the softmax of the gate the
    network applies on that task's path (hooks on the torch modules), averaged the same way."""
    model = network(block)
    user_id, history = users(7)
    example = {"user_id": user_id, "history": history, "candidate": torch.tensor([3]),
               "candidate_row": torch.tensor([0])}  # fmt: skip
    export_onnx(model, tmp_path / "model.onnx", example)
    seen: dict[str, list[torch.Tensor]] = {}
    top = model.block if block == "mmoe" else model.block.levels[-1]
    for task, gate in zip(TASKS, top.gates, strict=True):
        gate.register_forward_hook(
            lambda _m, _i, out, t=task.name: seen.setdefault(t, []).append(out)
        )
    with torch.no_grad():
        model(user_id, history, torch.zeros(0, dtype=torch.long), torch.zeros(0, dtype=torch.long))
    found = gate_weights(
        tmp_path / "model.onnx", [t.name for t in TASKS], 1,
        [(user_id.numpy(), history.numpy())],
    )  # fmt: skip
    levels = {g.level for g in found}
    assert levels == ({0} if block == "mmoe" else {0, 1})
    for gate, weights in found.items():
        assert weights.sum() == pytest.approx(1.0, abs=1e-6)
        if gate.level != max(levels):
            continue
        user_path, item_path = seen[gate.task]  # the block runs for the user tasks first
        applied = user_path if gate.task == "age" else item_path
        expected = applied.softmax(dim=-1).mean(dim=0).numpy()
        np.testing.assert_allclose(weights, expected, atol=1e-6)
        if block == "ple":
            assert gate.experts == ("own 0", "shared 0", "shared 1", "shared 2")


def test_a_shared_bottom_has_no_gates(tmp_path: Path) -> None:
    model = network("shared_bottom")
    user_id, history = users(3)
    example = {"user_id": user_id, "history": history, "candidate": torch.tensor([3]),
               "candidate_row": torch.tensor([0])}  # fmt: skip
    export_onnx(model, tmp_path / "model.onnx", example)
    batch = [(user_id.numpy(), history.numpy())]
    assert gate_weights(tmp_path / "model.onnx", ["click", "like", "age"], 1, batch) == {}


def test_leaving_a_task_out_zeroes_its_weight_and_watches_what_is_left() -> None:
    base = Base(None, ("optim.monitor=click_auc",))
    cfg = variant_config(base, Variant("without click", dropped="click"), seed=1)
    assert {t.name: t.weight for t in cfg.tasks}["click"] == 0.0
    assert all(t.weight > 0 for t in cfg.tasks if t.name != "click")
    assert cfg.optim.monitor == "loss"  # click's AUC would follow an untrained head
    kept = variant_config(base, Variant("without age", dropped="age"), seed=1)
    assert kept.optim.monitor == "click_auc"
    assert {t.name: t.weight for t in kept.tasks}["age"] == 0.0


def test_the_report_rules() -> None:
    assert overlap([0.5, 0.5, 0.0], [0.5, 0.5, 0.0]) == pytest.approx(1.0)
    assert overlap([1.0, 0.0], [0.0, 1.0]) == 0.0
    assert verdict(0.02, 0.01) == "helps"
    assert verdict(-0.02, 0.01) == "hurts"
    assert verdict(0.005, 0.01) == "tie"


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "training", "relatedness", *args],
        capture_output=True, text=True, timeout=900, check=False,
    )  # fmt: skip


def test_the_study_runs_end_to_end_on_an_artifact(trained, tmp_path: Path) -> None:
    _, repository = trained
    model = repository / "synth" / str(list_versions(repository / "synth")[-1])
    done = run("--model", str(model), "--seeds", "1", "--jobs", "2", "--quiet",
               "--out", str(tmp_path), "--optim.epochs=1")  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    study = json.loads((tmp_path / "relatedness.json").read_text())
    tasks = study["tasks"]
    assert set(study["gates"]) == set(tasks)  # the default block is MMoE
    for levels in study["gates"].values():
        assert sum(levels["level 0"]) == pytest.approx(1.0, abs=1e-6)
    for block in ("shared_bottom", "mmoe", "ple"):
        pairs = study["cosines"][block]
        assert len(pairs) == len(tasks) * (len(tasks) - 1) // 2
        assert all(len(per_epoch) == 1 for per_epoch in pairs.values())
    assert {d for row in study["effects"].values() for d in row} == set(tasks)
    assert len(study["runs"]) == 3 + len(tasks)
    text = (tmp_path / "relatedness.md").read_text()
    assert "## In words" in text
    assert (tmp_path / "relatedness.png").stat().st_size > 10_000
    again = run("--model", str(model), "--seeds", "1", "--quiet", "--out", str(tmp_path),
                "--reuse", str(tmp_path / "relatedness.json"), "--optim.epochs=1")  # fmt: skip
    assert again.returncode == 0, again.stderr[-2000:]
    assert json.loads((tmp_path / "relatedness.json").read_text())["runs"] == study["runs"]


def test_the_split_cannot_be_overridden(trained, tmp_path: Path) -> None:
    _, repository = trained
    model = repository / "synth" / str(list_versions(repository / "synth")[-1])
    done = run("--model", str(model), "--out", str(tmp_path), "--eval.seed=3")
    assert done.returncode == 2
    assert "eval.* cannot be overridden" in done.stderr
    misspelt = run("--model", str(model), "--out", str(tmp_path), "--optim.epoch=1")
    assert misspelt.returncode == 2
    assert "epoch" in misspelt.stderr
    assert not (tmp_path / "relatedness.json").exists()  # refused before any run
