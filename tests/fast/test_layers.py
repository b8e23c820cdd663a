"""The layers stay layers: edgecore <- targets <- pipeline, no import cycles, the public surface."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

pytestmark = pytest.mark.fast

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("edgecore", "targets", "pipeline")
# What each layer may import from the project (a layer never imports one above it).
ALLOWED = {"edgecore": {"edgecore"}, "targets": {"edgecore", "targets"}, "pipeline": {"edgecore", "targets", "pipeline"}}


def _modules() -> dict[str, Path]:
    found = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            found[".".join(parts)] = path
    return found


def _imports(name: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """Every project module ``name`` imports, anywhere in the file (functions and TYPE_CHECKING too)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join(anchor + ([base] if base else []))
            targets = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base for alias in node.names]
        else:
            continue
        found.update(t for t in targets if t.split(".")[0] in PACKAGES)
    return found


@pytest.fixture(scope="module")
def graph() -> dict[str, set[str]]:
    modules = _modules()
    return {name: _imports(name, path, modules) for name, path in modules.items()}


def test_no_layer_imports_a_layer_above_it(graph):
    wrong = [f"{name} -> {target}" for name, targets in graph.items() for target in targets
             if target.split(".")[0] not in ALLOWED[name.split(".")[0]]]
    assert not wrong, wrong


def test_pipeline_uses_only_the_public_surface_of_targets(graph):
    private = [f"{name} -> {target}" for name, targets in graph.items() if name.startswith("pipeline")
               for target in targets if target.startswith("targets.")]
    assert not private, private


def test_the_device_runner_stays_self_contained(graph):
    assert graph["targets.device_runner"] == set()


def test_there_are_no_import_cycles(graph):
    cycles, state, stack = [], {}, []

    def visit(node: str) -> None:
        state[node] = "open"
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == "open":
                cycles.append(" -> ".join(stack[stack.index(nxt):] + [nxt]))
            elif nxt not in state:
                visit(nxt)
        stack.pop()
        state[node] = "done"

    for node in sorted(graph):
        if node not in state:
            visit(node)
    assert not cycles, cycles


def test_the_walker_sees_relative_and_function_level_imports(graph):
    # Guards the guard: edges that are written in those forms must be found.
    assert "pipeline.stages" in graph["pipeline.plan"]  # from .stages import ...
    assert "pipeline.report" in graph["pipeline.stages"]  # imported inside emit()
    assert "targets.host" in graph["targets.registry"]  # imported inside a function
