"""mrpruner's import graph, read from the sources (imports inside functions included): data flows
one way through the layers of CONTRIBUTING.md (core -> model integration -> models and the miniature
-> measurement -> analysis -> plotting -> book), so no module imports one of a higher layer and no
modules import each other in a circle; the model-independent modules never import a host."""

import ast
from pathlib import Path

import pytest

import mrpruner

ROOT = Path(mrpruner.__file__).parent


def _modules() -> dict[str, ast.Module]:
    """Every module of the package by dotted name, parsed."""
    found = {}
    for path in sorted(ROOT.rglob("*.py")):
        parts = path.relative_to(ROOT).with_suffix("").parts
        name = ".".join(("mrpruner",) + parts[:-1] + (() if parts[-1] == "__init__" else parts[-1:]))
        found[name] = ast.parse(path.read_text())
    return found


def imports(modules: dict[str, ast.Module]) -> dict[str, set[str]]:
    """Which package modules each module imports, anywhere in its body: `from a import b` names
    a.b when that is a module, else a."""
    graph = {}
    for name, tree in modules.items():
        targets = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                targets |= {alias.name for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                for alias in node.names:
                    sub = f"{node.module}.{alias.name}"
                    targets.add(sub if sub in modules else node.module)
        graph[name] = {t for t in targets if t in modules and t != name}
    return graph


def upward(graph: dict[str, set[str]], layer: dict[str, int]) -> set[tuple[str, str]]:
    """The imports (importer, imported) from a module to one of a higher layer."""
    return {(name, target) for name, targets in graph.items() for target in targets if layer[target] > layer[name]}


def reachable(graph: dict[str, set[str]], start: set[str]) -> set[str]:
    """The modules `start` imports, directly or through others, and `start` itself."""
    seen, todo = set(), list(start)
    while todo:
        name = todo.pop()
        if name not in seen:
            seen.add(name)
            todo += graph[name]
    return seen


def cycle(graph: dict[str, set[str]], nodes: set[str]) -> list[str] | None:
    """A cycle among `nodes` (as a path that returns to its start), or None."""
    state: dict[str, int] = {}
    path: list[str] = []

    def visit(name: str) -> list[str] | None:
        state[name] = 1
        path.append(name)
        for nxt in sorted(graph[name] & nodes):
            if state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        state[name] = 2
        path.pop()
        return None

    for name in sorted(nodes):
        if name not in state and (found := visit(name)):
            return found
    return None


MODULES = _modules()
GRAPH = imports(MODULES)
# The layers, lowest first (CONTRIBUTING.md, "Layers"): a module imports its own layer and those below.
LAYERS = {
    "core": {"checks", "budget", "core", "baselines", "flops", "graph"},
    "model integration": {"", "seam", "attention", "fastv", "methods", "patch", "hosts", "hosts.llava_next",
                          "hosts.llava_onevision", "hosts.internvl", "examples", "examples.divprune"},
    "models and the miniature": {"models", "testing", "mini", "mini.data", "mini.model"},
    # results storage with the rule's interval, the paper's numbers, the lmms-eval model and tasks, the
    # sweeps and their workers, speed benchmarks, and the miniature's training, tasks and measurement,
    # which write their files through results' atomic writes
    "measurement": {"rule", "paper", "results", "benchmarks", "tasks", "lmms_eval_model", "cost", "workers",
                    "sweep", "sweep.grid", "sweep.cells", "sweep.run", "sweep.cli", "sweep.__main__",
                    "bench", "latency", "mini.train", "mini.task", "mini.measure", "mini.__main__"},
    "analysis": {"analysis", "analysis.probes", "analysis.sweeps", "analysis.statements", "claims"},
    "plotting": {"palette", "plotting"},
    "book": {"book"},
}
LAYER = {".".join(filter(None, ("mrpruner", name))): rank for rank, names in enumerate(LAYERS.values()) for name in names}
# Imports against the layers that stay for now, each with its reason (none today); any other fails the suite.
EXCEPTIONS: set[tuple[str, str]] = set()


def test_the_graph_reader_finds_a_cycle_and_its_absence():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert cycle(graph, set(graph)) == ["a", "b", "c", "a"]
    assert cycle({"a": {"b"}, "b": set(), "d": {"a", "b"}}, {"a", "b", "d"}) is None
    tree = {"mrpruner.x": ast.parse("def f():\n    from mrpruner import y\n"), "mrpruner.y": ast.parse(""),
            "mrpruner": ast.parse("")}
    assert imports(tree)["mrpruner.x"] == {"mrpruner.y"}  # a lazy import counts, by its module


def test_the_layer_reader_finds_an_upward_import():
    graph = {"low": {"high"}, "high": {"low"}, "mid": set()}
    assert upward(graph, {"low": 0, "mid": 1, "high": 2}) == {("low", "high")}


def test_every_module_has_one_layer():
    placed = [name for names in LAYERS.values() for name in names]
    assert len(placed) == len(set(placed))
    assert set(LAYER) == set(MODULES), f"unplaced: {sorted(set(MODULES) - set(LAYER))}; gone: {sorted(set(LAYER) - set(MODULES))}"


def test_no_module_imports_one_of_a_higher_layer():
    found = upward(GRAPH, LAYER)
    assert found <= EXCEPTIONS, sorted(found - EXCEPTIONS)
    assert EXCEPTIONS <= found, f"no longer imported, remove from EXCEPTIONS: {sorted(EXCEPTIONS - found)}"


def test_no_modules_import_each_other_in_a_circle():
    assert cycle(GRAPH, set(MODULES)) is None, " -> ".join(cycle(GRAPH, set(MODULES)))


@pytest.mark.parametrize("name", ["mrpruner.seam", "mrpruner.methods", "mrpruner.flops", "mrpruner.budget",
                                  "mrpruner.core", "mrpruner.baselines", "mrpruner.fastv", "mrpruner.attention"])
def test_model_independent_modules_import_no_host(name):
    assert not {n for n in reachable(GRAPH, {name}) if n.startswith("mrpruner.hosts")}
