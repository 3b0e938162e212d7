"""The plug-in's import graph, read from the sources: no module of the plug-in imports one that
imports it back (not even inside a function), and its model-independent modules never import a
host."""

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


def reachable(graph: dict[str, set[str]], start: set[str]) -> set[str]:
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
# The plug-in: what `import mrpruner` and every host load, with the lmms-eval model on top.
PLUGIN = reachable(GRAPH, {"mrpruner"} | {n for n in MODULES if n.startswith("mrpruner.hosts")})


def test_the_graph_reader_finds_a_cycle_and_its_absence():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert cycle(graph, set(graph)) == ["a", "b", "c", "a"]
    assert cycle({"a": {"b"}, "b": set(), "d": {"a", "b"}}, {"a", "b", "d"}) is None
    tree = {"mrpruner.x": ast.parse("def f():\n    from mrpruner import y\n"), "mrpruner.y": ast.parse(""),
            "mrpruner": ast.parse("")}
    assert imports(tree)["mrpruner.x"] == {"mrpruner.y"}  # a lazy import counts, by its module


def test_the_plugin_covers_the_seam_the_methods_and_the_hosts():
    assert {"mrpruner.patch", "mrpruner.seam", "mrpruner.methods", "mrpruner.flops", "mrpruner.fastv",
            "mrpruner.attention", "mrpruner.hosts.llava_next", "mrpruner.hosts.llava_onevision",
            "mrpruner.hosts.internvl"} <= PLUGIN


def test_no_module_of_the_plugin_imports_one_that_imports_it_back():
    assert cycle(GRAPH, PLUGIN) is None, " -> ".join(cycle(GRAPH, PLUGIN))


@pytest.mark.parametrize("name", ["mrpruner.seam", "mrpruner.methods", "mrpruner.flops", "mrpruner.budget",
                                  "mrpruner.core", "mrpruner.baselines", "mrpruner.fastv", "mrpruner.attention"])
def test_model_independent_modules_import_no_host(name):
    assert not {n for n in reachable(GRAPH, {name}) if n.startswith("mrpruner.hosts")}
