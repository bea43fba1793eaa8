"""The documentation: its reference pages cover every setting, metric and training key the code
really has, the site builds strictly (a broken link or anchor fails the build), and the README
stays a front door."""

from __future__ import annotations

import dataclasses
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from markdown.extensions.toc import slugify
from prometheus_client.parser import text_string_to_metric_families

from service.config import ENV_PREFIX, Settings
from service.metrics import Metrics
from training.config import EvalConfig, NetworkConfig, OptimConfig, SyntheticConfig

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
README_LINES = 300  # the front door: the two commands, a request, the headline figures, links


def page(name: str) -> str:
    return (DOCS / name).read_text(encoding="utf-8")


def test_every_setting_is_documented() -> None:
    text = page("configuration.md")
    for name in Settings.model_fields:
        assert f"`{ENV_PREFIX}{name.upper()}`" in text, name


def test_every_metric_is_documented() -> None:
    text = page("deploy.md")
    metrics = Metrics()
    metrics.start_handler("/predict", "POST")
    for family in text_string_to_metric_families(metrics.render()[0].decode()):
        exposed = family.name + ("_total" if family.type == "counter" else "")
        documented = "process_*" if exposed.startswith("process_") else exposed
        assert f"`{documented}`" in text, exposed


@pytest.mark.parametrize(
    ("section", "cls"),
    [
        ("network", NetworkConfig),
        ("optim", OptimConfig),
        ("eval", EvalConfig),
        ("synthetic", SyntheticConfig),
    ],
)
def test_every_training_key_is_documented(section: str, cls: type) -> None:
    text = page("configuration.md")
    for field in dataclasses.fields(cls):
        # rows name a key in full (`optim.seed`) or after the first of a group (`, lr`)
        assert f"`{section}.{field.name}`" in text or f"`{field.name}`" in text, field.name


def test_the_readme_is_a_front_door() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert len(readme.splitlines()) <= README_LINES
    for name in ("make serve", "make test", "/predict", "docs/quality.md", "docs/performance.md"):
        assert name in readme, name


def test_the_readmes_links_lead_to_pages_and_sections_that_exist() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    links = re.findall(r"\]\(([^)#]+)(?:#([^)]+))?\)", readme)
    assert len(links) >= 10
    for target, anchor in links:
        if target.startswith("http"):
            continue
        path = ROOT / target
        assert path.is_file(), target
        if anchor:
            headings = re.findall(r"^#+ (.+)$", path.read_text(encoding="utf-8"), flags=re.M)
            assert anchor in {slugify(h, "-") for h in headings}, f"{target}#{anchor}"


def build(folder: Path) -> subprocess.CompletedProcess[str]:
    """`mkdocs build --strict` of the project's site (the config of `folder`) into `folder`."""
    mkdocs = Path(sys.executable).with_name("mkdocs")
    return subprocess.run(
        [str(mkdocs), "build", "--strict", "--config-file", str(folder / "mkdocs.yml")],
        cwd=folder,
        capture_output=True,
        text=True,
        timeout=300,
        env=os.environ | {"NO_MKDOCS_2_WARNING": "1"},
    )


@pytest.fixture
def project_copy(tmp_path: Path) -> Path:
    """The files the site is built from, copied: mkdocs.yml, docs/, reports/ and bench/."""
    shutil.copy(ROOT / "mkdocs.yml", tmp_path)
    for folder in ("docs", "reports", "bench"):
        shutil.copytree(ROOT / folder, tmp_path / folder, ignore=shutil.ignore_patterns("*.pt"))
    return tmp_path


def test_the_site_builds_strictly_with_the_plots_it_shows(project_copy: Path) -> None:
    built = build(project_copy)
    assert built.returncode == 0, built.stderr
    site = project_copy / "site"
    assert (site / "quality" / "index.html").is_file()
    assert (site / "reports" / "experiments.png").is_file()  # a plot a page shows, from reports/
    assert "reports/experiments.png" in (site / "multitask" / "index.html").read_text()


@pytest.mark.parametrize(
    "broken", ["[the API](servng.md)", "[a section](quality.md#no-such-section)"]
)
def test_a_broken_link_or_anchor_fails_the_build(project_copy: Path, broken: str) -> None:
    index = project_copy / "docs" / "index.md"
    index.write_text(index.read_text(encoding="utf-8") + f"\n{broken}\n", encoding="utf-8")
    built = build(project_copy)
    assert built.returncode != 0
    assert "servng.md" in built.stderr or "no-such-section" in built.stderr
