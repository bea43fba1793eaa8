"""`python -m training`: trains end to end, and refuses bad input with one clear line."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from service.repository import load_artifact
from tests.conftest import TINY


def _run(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "training", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        check=False,
        timeout=600,
    )


def test_train_evaluate_export_on_a_data_folder(data_dir: Path, tmp_path: Path) -> None:
    # Given a user's own log in CSV and a tiny network
    flags = [f"--{o}" for o in TINY if not o.startswith("synthetic.")]
    flags += ["--eval.n_rank_negatives=1", "--eval.k=1", "--eval.n_click_negatives=1"]

    # When it is trained, evaluated from the checkpoint and exported again
    trained = _run(
        "train",
        "--data",
        str(data_dir),
        "--name",
        "mylog",
        "--out",
        "models",
        "--quiet",
        *flags,
        cwd=tmp_path,
    )
    evaluated = _run("evaluate", "--checkpoint", "reports/mylog/1/heldout.pt", cwd=tmp_path)
    exported = _run("export", "--checkpoint", "reports/mylog/1/checkpoint.pt", cwd=tmp_path)
    refused = _run("evaluate", "--checkpoint", "reports/mylog/1/checkpoint.pt", cwd=tmp_path)

    # Then there are two verified versions of the refit, a report, and the same figures from
    # evaluating the held-out checkpoint; the refit's own test figures are refused
    assert trained.returncode == 0, trained.stderr
    assert "artifact: models/mylog/1" in trained.stdout
    assert "refit on all of the data" in trained.stdout
    assert evaluated.returncode == 0, evaluated.stderr
    assert exported.returncode == 0, exported.stderr
    exported_manifest = load_artifact(tmp_path / "models", "mylog").manifest
    assert exported_manifest.version == 2
    assert exported_manifest.fit is not None
    assert exported_manifest.fit.refit
    report = json.loads((tmp_path / "reports/mylog/1/report.json").read_text())
    assert f"| click_auc | {report['metrics']['click_auc']:.4f} |" in evaluated.stdout
    for row in (
        "| full catalogue, ",
        "| model, every item | ",
        "| popularity | ",
        "| EASE, lambda ",
    ):
        assert row in evaluated.stdout, row  # the ranking among every item, beside the sampled
    assert exported_manifest.metrics["click_auc"] == report["metrics"]["click_auc"]
    assert (tmp_path / "reports/mylog/1/curves.png").stat().st_size > 1000
    assert refused.returncode == 2
    assert "heldout.pt" in refused.stderr
    assert "Traceback" not in refused.stderr


def test_bad_data_is_one_clear_error(data_dir: Path, tmp_path: Path) -> None:
    path = data_dir / "interactions.csv"
    path.write_text(path.read_text().replace("u0,i0,1000", "u0,i0,noon"))
    out = _run("train", "--data", str(data_dir), "--name", "mylog", "--quiet", cwd=tmp_path)
    assert out.returncode == 2
    assert out.stderr.startswith("error: 1 problem(s) in the input data")
    assert "interactions.csv line 2, column timestamp: 'noon'" in out.stderr
    assert "Traceback" not in out.stderr
    assert not (tmp_path / "models").exists()


def test_bad_override_is_one_clear_error(tmp_path: Path) -> None:
    out = _run("train", "--data", "synthetic", "--optim.epoch=3", cwd=tmp_path)
    assert out.returncode == 2
    assert "error: unknown key optim.epoch" in out.stderr
    unknown = _run("train", "--data", "synthetic", "stray", cwd=tmp_path)
    assert unknown.returncode == 2
    assert "config overrides look like" in unknown.stderr
