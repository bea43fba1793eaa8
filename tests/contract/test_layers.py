"""training/ in wings whose imports run one way, modules a reader can take in at once, and bench/
and harness/ free of the test tree (STYLE.md's layout; the house issue)."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
# Lower floors first; a module imports its own wing or a lower floor, never a higher one (the
# foundation, floor 0, is one wing: the config, its reader and the process group).
FLOORS = (
    ("training.config", "training.config_file", "training.distributed"),
    ("training.data",),
    ("training.network",),
    ("training.evaluation", "training.publish"),
    ("training.fit",),
    ("training.pipeline",),
    ("training.studies",),
    ("training.commands",),
    ("training.__main__",),
)
MAX_LINES = 310  # "about 300": a module that grows past it splits by what it does


def wing(module: str) -> str | None:
    """The wing (a FLOORS entry) a training module belongs to."""
    found = [w for floor in FLOORS for w in floor if module == w or module.startswith(w + ".")]
    return max(found, key=len) if found else None


def floor(module: str) -> int:
    return next(i for i, names in enumerate(FLOORS) if wing(module) in names)


def module_of(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path: Path) -> Iterator[str]:
    """Every absolute module `path` imports, at the top or inside a function (not just types)."""
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            yield node.module
            yield from (f"{node.module}.{alias.name}" for alias in node.names)


def sources(folder: str) -> list[Path]:
    return sorted((ROOT / folder).rglob("*.py"))


def known(name: str) -> str | None:
    """`name` as a module of the project, or None for a name imported from one."""
    path = ROOT / Path(*name.split("."))
    return name if path.with_suffix(".py").is_file() or (path / "__init__.py").is_file() else None


def edges(folder: str) -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {}
    for path in sources(folder):
        found = {m for name in imports(path) if (m := known(name)) and m.startswith(folder + ".")}
        graph[module_of(path)] = found - {module_of(path)}
    return graph


def test_every_training_module_is_in_a_wing() -> None:
    homeless = [module_of(p) for p in sources("training") if wing(module_of(p)) is None]
    assert homeless == ["training"]  # the package's own docstring


def test_training_imports_run_one_way() -> None:
    upward = [
        f"{source} -> {target}"
        for source, targets in edges("training").items()
        if source != "training"
        for target in targets
        if target != "training"
        and (
            floor(target) > floor(source)
            or (0 < floor(target) == floor(source) and wing(target) != wing(source))
        )
    ]
    assert upward == []


def test_no_import_circle_in_the_project() -> None:
    graph = {
        m: t
        for folder in ("training", "service", "eventstore", "harness", "bench")
        for m, t in edges(folder).items()
    }

    def cycle_from(start: str, path: tuple[str, ...]) -> tuple[str, ...] | None:
        for nxt in sorted(graph.get(path[-1], ())):
            if nxt == start:
                return (*path, nxt)
            if nxt not in path and nxt > start:  # each cycle once, from its smallest module
                found = cycle_from(start, (*path, nxt))
                if found:
                    return found
        return None

    circles = [c for m in sorted(graph) if (c := cycle_from(m, (m,)))]
    assert circles == []


@pytest.mark.parametrize("folder", ["bench", "harness", "training", "service", "eventstore"])
def test_only_the_tests_import_the_tests(folder: str) -> None:
    found = [
        f"{module_of(p)} -> {name}"
        for p in sources(folder)
        for name in imports(p)
        if name == "tests" or name.startswith("tests.")
    ]
    assert found == []


def test_the_event_store_stands_beside_both_halves() -> None:
    """eventstore is the one format the service writes and training reads: it imports neither,
    nor torch or onnxruntime, so each half takes it without the other."""
    found = [
        f"{module_of(p)} -> {name}"
        for p in sources("eventstore")
        for name in imports(p)
        if name.split(".")[0] in ("service", "training", "torch", "onnxruntime")
    ]
    assert found == []


def test_no_training_module_is_too_long_to_read_at_once() -> None:
    lengths = {
        module_of(p): len(p.read_text(encoding="utf-8").splitlines()) for p in sources("training")
    }
    assert {m: n for m, n in lengths.items() if n > MAX_LINES} == {}


def test_the_checks_can_fail() -> None:
    assert floor("training.studies.crossval") > floor("training.fit.train")
    assert wing("training.data.split") == "training.data"
    assert floor("training.distributed") == 0
