"""The package's import graph: no cycle anywhere, and imports point one way down the layers
(DESIGN.md §3).  Every import counts — module level, inside functions, and under TYPE_CHECKING —
since a lazy or type-only import that closes a cycle still ties the two modules together."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[2] / "layerpar"

LAYERS = [
    {"layerpar.cli", "layerpar.api", "layerpar", "layerpar.__main__", "layerpar.report"},
    {"layerpar.bench"},
    {"layerpar.launchers"},
    {"layerpar.parallel", "layerpar.evaluation", "layerpar.export", "layerpar.summary", "layerpar.generation"},
    {"layerpar.auxnet", "layerpar.data", "layerpar.config", "layerpar.config_checks", "layerpar.config_io", "layerpar.checkpoint"},
    {"layerpar.models", "layerpar.errors", "layerpar.diffusion"},
]
"""Top to bottom; a module may import its own layer's modules and any lower layer's."""


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for p in PACKAGE.rglob("*.py")}


def imports_of(path: Path, known: set[str]) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [f"{node.module}.{alias.name}" for alias in node.names] + [node.module]
        else:
            continue
        for name in names:
            if name in known:
                found.add(name)
    return found


def graph() -> dict[str, set[str]]:
    mods = modules()
    known = set(mods)
    edges = {name: imports_of(path, known) for name, path in mods.items()}
    for name, targets in edges.items():
        # `from layerpar.x import y` where y is a module: the edge is to y, not x as well.
        for target in list(targets):
            if any(other.startswith(target + ".") and other in targets for other in targets):
                targets.discard(target)
        targets.discard(name)
    return edges


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in edges.get(node, ()):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in edges:
        if node not in index:
            visit(node)
    return found


def layer_of(name: str) -> int:
    for depth, layer in enumerate(LAYERS):
        if any(name == top or name.startswith(top + ".") for top in layer if top != "layerpar") or name in layer:
            return depth
    raise AssertionError(f"{name} is in no layer: add it to LAYERS")


def test_no_import_cycle_anywhere():
    assert cycles(graph()) == []


def test_imports_point_down_the_layers():
    upward = [
        f"{source} -> {target}"
        for source, targets in graph().items()
        for target in targets
        if layer_of(target) < layer_of(source)
    ]
    assert upward == []


def test_the_cycle_finder_finds_a_cycle():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
