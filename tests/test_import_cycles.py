"""podnet/ imports in layers (model → plan → renderers): no module may import, even inside a
function or under TYPE_CHECKING, a module that imports it back. A function-level import hides a
cycle from Python's import machinery, not from the design: the two modules still cannot be
understood or changed one at a time."""

from __future__ import annotations

import ast
import itertools
from collections.abc import Iterator
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "podnet"


def module_name(path: Path, package: Path = PACKAGE) -> str:
    parts = path.relative_to(package.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported(path: Path, modules: set[str],
             package_dir: Path = PACKAGE) -> Iterator[tuple[str, int]]:
    """The podnet modules `path` imports anywhere in its body, with the line of each import."""
    name = module_name(path, package_dir)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name in modules:
                    yield alias.name, node.lineno
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                # a relative import counts from this module's package, one level up per dot
                base = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                target = f"{base}.{node.module}" if node.module else base
            else:
                target = node.module or ""
            if target in modules:
                yield target, node.lineno
            # `from podnet import dns` imports the module podnet.dns, not a name of podnet
            for alias in node.names:
                if f"{target}.{alias.name}" in modules:
                    yield f"{target}.{alias.name}", node.lineno


def import_graph() -> dict[str, dict[str, int]]:
    """Each podnet module to the podnet modules it imports (and the line that does)."""
    paths = sorted(PACKAGE.rglob("*.py"))
    modules = {module_name(p) for p in paths}
    graph: dict[str, dict[str, int]] = {}
    for path in paths:
        edges = graph.setdefault(module_name(path), {})
        for target, line in imported(path, modules):
            # a package's __init__ importing its own modules is not a cycle through them
            if target != module_name(path):
                edges.setdefault(target, line)
    return graph


def cycles(graph: dict[str, dict[str, int]]) -> list[list[str]]:
    """One shortest cycle per strongly connected group of modules (Tarjan's algorithm finds the
    groups; a breadth-first search from the group's first module names a cycle through it)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    groups: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in graph[node]:
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            group = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                group.append(member)
                if member == node:
                    break
            if len(group) > 1:
                groups.append(sorted(group))

    for node in sorted(graph):
        if node not in index:
            visit(node)

    found = []
    for group in sorted(groups):
        start = group[0]
        came_from: dict[str, str] = {}
        queue = [start]
        while queue:
            node = queue.pop(0)
            if start in graph[node] and node in group:
                path = [node]
                while path[-1] != start:
                    path.append(came_from[path[-1]])
                found.append([*reversed(path), start])
                break
            for nxt in sorted(graph[node]):
                if nxt in group and nxt not in came_from and nxt != start:
                    came_from[nxt] = node
                    queue.append(nxt)
    return found


def describe(cycle: list[str], graph: dict[str, dict[str, int]]) -> str:
    steps = [f"{a} (line {graph[a][b]})" for a, b in itertools.pairwise(cycle)]
    return " -> ".join([*steps, cycle[-1]])


def test_the_cycle_finder_names_a_cycle_and_passes_a_layered_graph() -> None:
    layered = {"a": {"b": 1}, "b": {"c": 2}, "c": {}}
    assert cycles(layered) == []
    looped = {"a": {"b": 1}, "b": {"c": 2}, "c": {"a": 3}, "d": {"a": 4}}
    assert cycles(looped) == [["a", "b", "c", "a"]]
    assert describe(["a", "b", "c", "a"], looped) == "a (line 1) -> b (line 2) -> c (line 3) -> a"


def test_the_import_graph_sees_function_level_and_relative_imports(tmp_path: Path) -> None:
    source = tmp_path / "podnet" / "one.py"
    source.parent.mkdir()
    source.write_text("from . import two\n\ndef f():\n    from podnet.three import x\n")
    modules = {"podnet.one", "podnet.two", "podnet.three"}
    found = sorted(imported(source, modules, tmp_path / "podnet"))
    assert found == [("podnet.three", 4), ("podnet.two", 1)]


def test_podnet_has_no_import_cycle() -> None:
    graph = import_graph()
    assert len(graph) > 10, f"found only {sorted(graph)} in {PACKAGE}"
    found = [describe(cycle, graph) for cycle in cycles(graph)]
    assert not found, "import cycles in podnet/:\n" + "\n".join(found)
