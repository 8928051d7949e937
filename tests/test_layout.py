"""The package's shape: packages import only downward in pipeline order, no import cycles, and the
runtime never reaches build-time code.

Every import counts, also those inside functions: a lazy import still ties two modules together,
and a cycle between them means neither can be read (or moved) without the other.
"""

from __future__ import annotations

import ast
from pathlib import Path


PKG = Path(__file__).resolve().parents[1] / "bonedeploy"

# The registry imports its families lazily and each family registers itself with it: by design.
ALLOWED_CYCLES = [{"bonedeploy.models", "bonedeploy.models._registry", "bonedeploy.models.alexnet", "bonedeploy.models.vgg",
                   "bonedeploy.models.resnet"}]
# Pipeline order, from the ground up: a module imports only packages of its own rank or lower.
RANKS = {
    "util": 1, "errors": 1, "ui": 1,
    "data": 2,
    "models": 3,
    "artefacts": 4,
    "backends": 5,
    "eval": 6,
    "export": 7, "training": 7, "bench": 7, "explain": 7,
    "infer": 8,
    "serve": 9, "dicomnode": 9,
    "cli": 10, "demo": 10, "__main__": 10,
}
# The runtime, and everything it imports transitively, must never reach build-time packages.
RUNTIME = ("bonedeploy.backends", "bonedeploy.infer", "bonedeploy.serve", "bonedeploy.dicomnode")
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


def rank(module: str) -> int:
    """0 for the top-level package itself (names shared by all: version, class names)."""
    parts = module.split(".")
    if len(parts) == 1:
        return 0
    if parts[1] not in RANKS:
        raise AssertionError(f"{module}: package {parts[1]!r} has no rank in tests/test_layout.py RANKS")
    return RANKS[parts[1]]


def upward_imports(graph: dict[str, set[str]]) -> list[tuple[str, str]]:
    return sorted((m, t) for m, targets in graph.items() for t in targets if rank(t) > rank(m))


def test_every_package_has_a_rank():
    assert sorted({m.split(".")[1] for m in import_graph() if "." in m} - set(RANKS)) == []


def test_no_package_imports_a_higher_rank():
    bad = upward_imports(import_graph())
    assert bad == [], "imports pointing up the pipeline order: " + "; ".join(
        f"{m} (rank {rank(m)}) -> {t} (rank {rank(t)})" for m, t in bad)


def test_the_rank_check_finds_an_upward_import():
    graph = {"bonedeploy.artefacts.card": {"bonedeploy.eval.operating_point", "bonedeploy.util.fs"},
             "bonedeploy.eval.operating_point": set(), "bonedeploy.util.fs": set()}
    assert upward_imports(graph) == [("bonedeploy.artefacts.card", "bonedeploy.eval.operating_point")]


def reachable(graph: dict[str, set[str]], starts: list[str]) -> dict[str, str | None]:
    """Every module reachable from ``starts``, each with the module that first imported it."""
    via: dict[str, str | None] = {}
    stack: list[tuple[str, str | None]] = [(m, None) for m in starts]
    while stack:
        m, parent = stack.pop()
        if m in via:
            continue
        via[m] = parent
        stack.extend((t, m) for t in sorted(graph[m]))
    return via


def build_time_chains(graph: dict[str, set[str]]) -> list[str]:
    via = reachable(graph, [m for m in graph if m.startswith(RUNTIME)])
    chains = []
    for m in sorted(via):
        if m.startswith(BUILD_TIME):
            chain = [m]
            while via[chain[-1]] is not None:
                chain.append(via[chain[-1]])  # type: ignore[arg-type]
            chains.append(" <- ".join(chain))
    return chains


def test_the_runtime_never_reaches_build_time_code_even_transitively():
    chains = build_time_chains(import_graph())
    assert chains == [], "the runtime reaches build-time code: " + "; ".join(chains)


def test_the_reachability_check_follows_transitive_imports():
    graph = {"bonedeploy.infer.run": {"bonedeploy.explain.run"},
             "bonedeploy.explain.run": {"bonedeploy.export.explain_onnx"},
             "bonedeploy.export.explain_onnx": set()}
    assert build_time_chains(graph) == [
        "bonedeploy.export.explain_onnx <- bonedeploy.explain.run <- bonedeploy.infer.run"]
