"""The experiment grid: configs per variant, the summary and verdict arithmetic, and a real quick
grid through the CLI on tiny synthetic data."""

from __future__ import annotations

import dataclasses
import json

import pytest

from training.__main__ import main
from training.studies.experiment import Base, Variant, grid, variant_config
from training.studies.experiment_report import summarise, verdicts

TASKS = ["click", "like", "gender"]
TINY = [
    "--synthetic.n_users=200",
    "--synthetic.n_items=120",
    "--synthetic.n_interactions=30",
    "--network.d_embedding=16",
    "--network.d_hidden=16",
    "--network.history_length=10",
    "--optim.epochs=1",
    "--eval.n_rank_negatives=50",
]


def test_grid_covers_single_tasks_blocks_weightings_and_esmm() -> None:
    names = [v.name for v in grid(TASKS, quick=False)]
    assert names[:3] == ["single-task click", "single-task like", "single-task gender"]
    for block in ("shared-bottom", "MMoE", "PLE"):
        assert {f"{block}, fixed", f"{block}, uncertainty", f"{block}, gradnorm"} <= set(names)
    assert "MMoE, fixed, ESMM like" in names
    assert len(grid(TASKS, quick=True)) == 3


def test_single_task_variant_weighs_only_its_task() -> None:
    cfg = variant_config(Base(None), Variant("single-task gender", alone="gender"), seed=2)
    assert {t.name: t.weight for t in cfg.tasks}["gender"] == 1.0
    assert sum(t.weight for t in cfg.tasks) == 1.0
    assert cfg.optim.monitor == "loss"  # user tasks have no validation metric
    assert cfg.optim.seed == 2
    like = variant_config(Base(None), Variant("single-task like", alone="like"), seed=0)
    assert like.optim.monitor == "like_auc"


def _run(variant: str, seed: int, alone: str | None, click: float, gender: float) -> dict:
    figures = {"click_auc": click, "hr@10": click / 2, "gender_auc": gender}
    return {
        "variant": variant,
        "alone": alone,
        "seed": seed,
        "metrics": figures,
        "cold": figures,
        "parameters": 1000,
        "seconds": 10.0,
        "epochs": 3,
    }


def test_summary_and_verdicts() -> None:
    runs = [
        _run("single-task click", 0, "click", 0.80, 0.5),
        _run("single-task click", 1, "click", 0.82, 0.5),
        _run("single-task gender", 0, "gender", 0.5, 0.70),
        _run("single-task gender", 1, "gender", 0.5, 0.72),
        _run("MMoE", 0, None, 0.90, 0.705),
        _run("MMoE", 1, None, 0.92, 0.715),
    ]
    summary = summarise(runs, "metrics", TASKS)
    assert summary["single-task click"]["click_auc"][0] == pytest.approx(0.81)
    assert "gender_auc" not in summary["single-task click"]
    assert set(summary["single-task gender"]) >= {"gender_auc"}
    assert summary["MMoE"]["hr@10"][0] == pytest.approx(0.455)
    lines = verdicts(summary, ["click_auc", "gender_auc"], TASKS)
    assert "multi-task wins" in lines[0]
    assert "tie" in lines[1]


def test_quick_grid_through_the_cli(tmp_path) -> None:
    args = ["experiment", "--quick", "--data", "synthetic", "--seeds", "2", "--jobs", "2"]
    assert main([*args, "--out", str(tmp_path), "--quiet", *TINY]) == 0

    raw = json.loads((tmp_path / "experiments.json").read_text())
    assert len(raw["runs"]) == 6
    assert raw["command"].startswith("python -m training experiment --quick")
    assert all(r["parameters"] > 0 and r["seconds"] > 0 for r in raw["runs"])
    multi = next(r for r in raw["runs"] if r["alone"] is None)
    assert multi["cold"] != multi["metrics"], "cold users see less history"
    text = (tmp_path / "experiments.md").read_text()
    assert "| single-task click |" in text
    assert "| MMoE, fixed |" in text
    assert "## Verdicts (cold users)" in text
    assert (tmp_path / "experiments.png").stat().st_size > 10_000


def test_bad_grid_arguments_fail_cleanly(capsys) -> None:
    assert main(["experiment", "--seeds", "0"]) == 2
    assert "error: --seeds" in capsys.readouterr().err
    assert main(["experiment", "--network.block=nope"]) == 2


def test_every_variant_names_its_weighting() -> None:
    """The table's rows must not change with the default weighting of the config."""
    for variant in grid(TASKS, quick=False):
        cfg = variant_config(Base(None), variant, seed=0)
        assert f"optim.weighting={cfg.optim.weighting}" in variant.overrides, variant.name


def test_the_content_grid_ablates_the_configs_features() -> None:
    import json

    from service.artifact import FeatureSpec
    from training.studies.experiment import content_grid

    genres = FeatureSpec(column="genres", kind="multi_categorical")
    year = FeatureSpec(column="year", kind="numeric")
    title = FeatureSpec(column="title", kind="text")
    variants = content_grid([genres, year, title], quick=False)

    names = [v.name for v in variants]
    assert names == [
        "ids only",
        "+ genres and year",
        "+ title",
        "all features",
        "all, text shuffled across items",
    ]
    used = [json.loads(v.overrides[0].removeprefix("features=")) for v in variants]
    assert [[f["column"] for f in u] for u in used] == [
        [],
        ["genres", "year"],
        ["title"],
        ["genres", "year", "title"],
        ["genres", "year", "title"],
    ]
    assert [f.get("shuffled", False) for f in used[-1]] == [False, False, True]
    assert [v.name for v in content_grid([genres, year], quick=False)] == [
        "ids only",
        "+ genres and year",
        "all features",
    ]


def test_the_quality_ladder_adds_each_change_to_the_ones_before() -> None:
    from training.studies.experiment import quality_grid

    steps = quality_grid(quick=False)
    assert [v.name for v in steps] == [
        "base config",
        "+ wide profile heads",
        "+ head tuning",
        "+ sampled softmax",
        "+ dot-product item heads",
        "+ catalogue softmax",
        "+ 16 negatives",
        "+ temperature scaling",
        "+ cosine learning rate",
    ]
    ladder, side = steps[:-1], steps[-1]
    for before, after in zip(ladder, ladder[1:], strict=False):
        assert set(before.overrides) < set(after.overrides)
        assert after.against is None
    assert side.against == "+ dot-product item heads"
    on = variant_config(Base(None), steps[4], seed=0)
    assert on.network.item_dot
    assert not on.optim.catalogue_softmax
    cosine = variant_config(Base(None), side, seed=0)
    assert cosine.optim.lr_schedule == "cosine"
    assert dataclasses.replace(cosine.optim, lr_schedule="constant") == on.optim
    assert cosine.network == on.network
    last = variant_config(Base(None), ladder[-1], seed=0)
    assert last.network.wide_profile
    assert last.optim.head_epochs > 0
    assert last.optim.sampled_softmax > 0
    assert last.network.item_dot
    assert last.optim.catalogue_softmax > 0
    assert last.optim.n_negatives == 16
    assert last.optim.calibration_users > 0
    assert not variant_config(Base(None), steps[0], seed=0).network.wide_profile


def test_quick_quality_ladder_through_the_cli(tmp_path) -> None:
    args = ["experiment", "--grid", "quality", "--quick", "--data", "synthetic", "--seeds", "1"]
    assert main([*args, "--out", str(tmp_path), "--quiet", *TINY]) == 0

    raw = json.loads((tmp_path / "quality.json").read_text())
    assert [r["variant"] for r in raw["runs"]] == [
        "base config",
        "+ head tuning",
        "+ dot-product item heads",
        "+ 16 negatives",
        "+ cosine learning rate",
    ]
    text = (tmp_path / "quality.md").read_text()
    assert "- **+ head tuning** against base config: click_auc" in text
    assert "- **+ 16 negatives** against + dot-product item heads: click_auc" in text
    assert "- **+ cosine learning rate** against + dot-product item heads: click_auc" in text
    assert (tmp_path / "quality.png").stat().st_size > 10_000

    # again, reusing the file's runs; the last one's config no longer matches: trained again
    raw["runs"][-1]["config"]["optim"]["lr_schedule"] = "constant"
    (tmp_path / "earlier.json").write_text(json.dumps(raw))
    again = tmp_path / "again"
    reuse = ["--reuse", str(tmp_path / "earlier.json")]
    assert main([*args, "--out", str(again), "--quiet", *reuse, *TINY]) == 0
    rerun = json.loads((again / "quality.json").read_text())["runs"]
    assert [r["seconds"] for r in rerun[:-1]] == [r["seconds"] for r in raw["runs"][:-1]]
    assert rerun[-1]["seconds"] != raw["runs"][-1]["seconds"], "trained again"
    assert rerun[-1]["config"]["optim"]["lr_schedule"] == "cosine"
    assert rerun[-1]["metrics"] == raw["runs"][-1]["metrics"], "deterministic"


def test_a_file_to_reuse_that_is_not_a_results_file_is_refused(tmp_path, capsys) -> None:
    (tmp_path / "bad.json").write_text('{"runs": [{"variant": "x"}]}')
    args = ["experiment", "--grid", "quality", "--quick", "--data", "synthetic", *TINY]
    assert main([*args, "--reuse", str(tmp_path / "bad.json")]) == 2
    err = capsys.readouterr().err
    assert "--reuse" in err
    assert "not a list of runs" in err
