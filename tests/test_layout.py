"""The package's shape: no import cycles, and the runtime never reaches build-time code.

Every import counts, also those inside functions: a lazy import still ties two modules together,
and a cycle between them means neither can be read (or moved) without the other.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PKG = Path(__file__).resolve().parents[1] / "bonedeploy"

# The registry imports its families lazily and each family registers itself with it: by design.
ALLOWED_CYCLES = [{"bonedeploy.models", "bonedeploy.models._registry", "bonedeploy.models.alexnet", "bonedeploy.models.vgg",
                   "bonedeploy.models.resnet"}]
# What the edge runtime is made of; none of it may import build-time packages.
RUNTIME = ("bonedeploy.artefacts", "bonedeploy.backends", "bonedeploy.infer", "bonedeploy.data.preprocess",
           "bonedeploy.data.imageio", "bonedeploy.data.decode")
BUILD_TIME = ("bonedeploy.export", "bonedeploy.training", "bonedeploy.bench")


def module_name(path: Path) -> str:
    rel = path.relative_to(PKG.parent).with_suffix("")
    parts = rel.parts[:-1] if rel.name == "__init__" else rel.parts
    return ".".join(parts)


def import_graph() -> dict[str, set[str]]:
    modules = {module_name(p): p for p in PKG.rglob("*.py")}
    graph: dict[str, set[str]] = {m: set() for m in modules}
    for mod, path in modules.items():
        for node in ast.walk(ast.parse(path.read_text())):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                # `from bonedeploy.x import y`: y is a submodule of x, or a name defined in x
                targets = [f"{node.module}.{a.name}" if f"{node.module}.{a.name}" in modules
                           else node.module for a in node.names]
            for t in targets:
                while t and t not in modules:
                    t = t.rpartition(".")[0]
                if t and t != mod and t.startswith("bonedeploy"):
                    graph[mod].add(t)
    # (Importing a submodule also runs its package's __init__; a package that re-exports its
    # submodules is not a cycle of ours, so that implicit edge is left out.)
    return graph


def cycles(graph: dict[str, set[str]]) -> list[set[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[set[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = set()
            while True:
                w = stack.pop()
                on.discard(w)
                comp.add(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(comp)

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def test_no_import_cycles_but_the_model_registry():
    found = [c for c in cycles(import_graph()) if not any(c <= allowed for allowed in ALLOWED_CYCLES)]
    assert found == [], "import cycles: " + "; ".join(" <-> ".join(sorted(c)) for c in found)


def test_the_cycle_finder_finds_a_cycle():
    assert cycles({"a": {"b"}, "b": {"a"}, "c": set()}) == [{"a", "b"}]


@pytest.mark.parametrize("runtime", RUNTIME)
def test_the_runtime_imports_no_build_time_code(runtime):
    graph = import_graph()
    bad = sorted((m, t) for m, targets in graph.items() if m == runtime or m.startswith(runtime + ".")
                 for t in targets if t.startswith(BUILD_TIME))
    assert bad == []
