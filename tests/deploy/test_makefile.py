"""The README's make targets install what they need, no more (dry runs: `make -n`)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
CPU_INDEX = "https://download.pytorch.org/whl/cpu"


def dry_run(target: str, tmp_path: Path, env: dict[str, str] | None = None) -> str:
    result = subprocess.run(
        ["make", "-n", target, f"VENV={tmp_path / 'venv'}"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_serving_installs_the_serve_extra_only(tmp_path: Path) -> None:
    commands = dry_run("serve", tmp_path)
    installs = [line for line in commands.splitlines() if "pip install" in line and "-e" in line]
    assert installs == [f"{tmp_path / 'venv'}/bin/python -m pip install --quiet -e '.[serve]'"]
    assert "torch" not in commands
    assert "-m service" in commands


def test_a_machine_without_local_wheels_takes_torch_from_the_cpu_index(tmp_path: Path) -> None:
    # pip with no configuration at all: an ordinary machine
    plain = {k: v for k, v in os.environ.items() if not k.startswith("PIP_")}
    commands = dry_run("test", tmp_path, plain | {"PIP_CONFIG_FILE": os.devnull})
    assert f"'torch==2.13.0' --index-url '{CPU_INDEX}'" in commands
    assert "-e '.[serve,train,dev]'" in commands


def test_a_configured_wheel_folder_or_an_explicit_index_is_used_as_it_is(tmp_path: Path) -> None:
    local = os.environ | {"PIP_FIND_LINKS": str(tmp_path)}
    assert CPU_INDEX not in dry_run("install", tmp_path, local)
    mirror = dry_run("install", tmp_path, os.environ | {"TORCH_INDEX": "https://mirror.test/cpu"})
    assert "--index-url 'https://mirror.test/cpu'" in mirror


def test_the_docs_targets_build_strictly_and_serve_on_loopback(tmp_path: Path) -> None:
    assert "mkdocs build --strict" in dry_run("docs", tmp_path)
    assert "mkdocs build --strict" in dry_run("lint", tmp_path)
    served = dry_run("docs-serve", tmp_path)
    assert "mkdocs serve --strict --dev-addr 127.0.0.1:8001" in served
