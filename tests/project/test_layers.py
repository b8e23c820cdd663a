"""The layers stay layers: edgecore <- targets <- pipeline, and inside them rooms in one direction.

pipeline:  cli -> api -> run (plan/stages) -> frontend / quantize / train / report -> core -> targets -> edgecore
targets:   the surface (__init__, registry) -> host / arm / mcu -> the shared modules (base, worker, profiles, ...)

A module imports only its own rank or one below; rooms of one rank may import each other, but never in a cycle.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

pytestmark = pytest.mark.fast

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("edgecore", "targets", "pipeline")
# What each layer may import from the project (a layer never imports one above it).
ALLOWED = {"edgecore": {"edgecore"}, "targets": {"edgecore", "targets"}, "pipeline": {"edgecore", "targets", "pipeline"}}
# Inside a layer: the rank of each room (0 is the top). The longest matching prefix decides.
RANKS = {
    "pipeline.cli": 0,
    "pipeline.api": 1,
    "pipeline.run": 2,
    "pipeline.frontend": 3, "pipeline.quantize": 3, "pipeline.train": 3, "pipeline.report": 3,
    "pipeline.core": 4, "pipeline.errors": 4, "pipeline.vocab": 4, "pipeline.config": 4, "pipeline": 4,
    "targets": 0, "targets.registry": 0,
    "targets.host": 1, "targets.arm": 1, "targets.mcu": 1, "targets.npu": 1,
    "targets.base": 2, "targets.worker": 2, "targets.worker_main": 2, "targets.profiles": 2, "targets.cost_model": 2,
    "targets.kernels": 2,
    "edgecore": 0,
}
MAX_MODULES_PER_FOLDER = 15


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


def _room(name: str) -> str:
    """The unit a module belongs to: its longest ranked prefix (a subpackage, or the module itself)."""
    parts = name.split(".")
    for end in range(len(parts), 0, -1):
        if ".".join(parts[:end]) in RANKS:
            return ".".join(parts[:end])
    raise KeyError(name)


def _cycles(graph: dict[str, set[str]]) -> list[str]:
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
    return cycles


@pytest.fixture(scope="module")
def graph() -> dict[str, set[str]]:
    modules = _modules()
    return {name: _imports(name, path, modules) for name, path in modules.items()}


def test_no_layer_imports_a_layer_above_it(graph):
    wrong = [f"{name} -> {target}" for name, targets in graph.items() for target in targets
             if target.split(".")[0] not in ALLOWED[name.split(".")[0]]]
    assert not wrong, wrong


def test_every_module_has_a_room_with_a_rank(graph):
    unranked = []
    for name in graph:
        try:
            _room(name)
        except KeyError:
            unranked.append(name)
    assert not unranked, f"add these to RANKS (and to the README's architecture section): {unranked}"


def test_no_room_imports_a_room_above_it(graph):
    wrong = [f"{name} -> {target}" for name, targets in graph.items() for target in targets
             if target.split(".")[0] == name.split(".")[0] and RANKS[_room(target)] < RANKS[_room(name)]]
    assert not wrong, wrong


def test_rooms_import_each_other_without_a_cycle(graph):
    rooms: dict[str, set[str]] = {}
    for name, targets in graph.items():
        rooms.setdefault(_room(name), set()).update(_room(t) for t in targets if _room(t) != _room(name))
    assert not _cycles(rooms), _cycles(rooms)


def test_pipeline_uses_only_the_public_surface_of_targets(graph):
    private = [f"{name} -> {target}" for name, targets in graph.items() if name.startswith("pipeline")
               for target in targets if target.startswith("targets.")]
    assert not private, private


def test_the_device_runner_stays_self_contained(graph):
    assert graph["targets.host.device_runner"] == set()


def test_there_are_no_import_cycles(graph):
    cycles = _cycles(graph)
    assert not cycles, cycles


def test_no_folder_holds_more_than_fifteen_modules():
    crowded = {}
    for package in PACKAGES:
        for folder in [ROOT / package, *(p.parent for p in (ROOT / package).rglob("__init__.py"))]:
            count = len([p for p in folder.glob("*.py") if p.name not in ("__init__.py", "__main__.py")])
            if count > MAX_MODULES_PER_FOLDER:
                crowded[str(folder.relative_to(ROOT))] = count
    assert not crowded, crowded


def test_every_room_says_what_it_owns_and_may_import():
    for package in PACKAGES:
        for init in (ROOT / package).rglob("__init__.py"):
            doc = ast.get_docstring(ast.parse(init.read_text())) or ""
            assert len(doc.split()) >= 12, f"{init.relative_to(ROOT)} needs a docstring: what it owns, what it may import"
            if init.parent != ROOT / package:
                assert "import" in doc, f"{init.relative_to(ROOT)} does not say what it may import"


def test_the_walker_sees_relative_and_function_level_imports(graph):
    # Guards the guard: edges that are written in those forms must be found.
    assert "pipeline.run.stages" in graph["pipeline.run.plan"]  # from .stages import ...
    assert "pipeline.report.reports" in graph["pipeline.run.stages"]  # imported inside emit()
    assert "targets.host.target" in graph["targets.registry"]  # imported inside a function


def test_the_rank_check_would_catch_an_upward_import():
    # Guards the guard: a quantize module importing the run room is above it.
    assert RANKS[_room("pipeline.run.stages")] < RANKS[_room("pipeline.quantize.convert")]
    assert _cycles({"a": {"b"}, "b": {"a"}})
