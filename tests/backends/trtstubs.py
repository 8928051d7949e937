"""The TensorRT API surface from the installed ``tensorrt-stubs`` (generated from the real
TensorRT 10.13 bindings), for checking our stand-ins and our calls without TensorRT.

Shared by tests/backends/test_tensorrt_surface.py and .ci/typecheck.sh (which puts the repaired
stubs on MYPYPATH). The stubs as shipped do not parse, and mypy misreads some types; ``repair``
fixes only those generator defects: a parameter named ``in`` (-> ``in_``), a required parameter
after defaulted ones (the line's defaults are dropped: stricter, not looser), ``...`` or the
undefined ``capsule`` used as a type (-> ``typing.Any``), and annotations ``bool`` that mean the
builtin but resolve to the module's ``bool: DataType`` (-> ``builtins.bool``).
"""

from __future__ import annotations

import ast
import importlib.metadata as md
import re
from dataclasses import dataclass
from pathlib import Path

# Names TensorRT 10.13 still has but TensorRT 11 removed (explicit precision flags, implicit
# batch, INT8 calibration): our code must not use them although the 10.13 stubs list them.
REMOVED_IN_TRT11 = frozenset({
    "BuilderFlag.FP16", "BuilderFlag.INT8", "BuilderFlag.BF16", "BuilderFlag.FP8", "BuilderFlag.INT4",
    "BuilderFlag.FP4", "BuilderFlag.OBEY_PRECISION_CONSTRAINTS", "BuilderFlag.PREFER_PRECISION_CONSTRAINTS",
    "BuilderFlag.DIRECT_IO", "NetworkDefinitionCreationFlag.EXPLICIT_BATCH", "IBuilderConfig.int8_calibrator",
    "IInt8Calibrator", "IInt8EntropyCalibrator", "IInt8EntropyCalibrator2", "IInt8LegacyCalibrator",
    "IInt8MinMaxCalibrator", "CalibrationAlgoType",
})


@dataclass(frozen=True)
class Member:
    kind: str  # "method", "property" (or a plain attribute), "class"
    arities: tuple[tuple[int, int], ...] = ()  # (required, all) positional parameters after self, per overload


def stub_files() -> dict[str, Path]:
    """``{"tensorrt/__init__.pyi": path, ...}`` of the installed tensorrt-stubs; {} when absent."""
    try:
        files = md.distribution("tensorrt-stubs").files or []
    except md.PackageNotFoundError:
        return {}
    return {str(f): Path(str(f.locate())) for f in files
            if f.suffix == ".pyi" and f.parts[0] in ("tensorrt", "tensorrt_bindings")}


def repair(text: str) -> str:
    shadowed_bool = re.search(r"^bool:", text, re.M) is not None
    out = []
    for line in text.splitlines():
        if line.lstrip().startswith("def "):
            if not _parses(line):
                line = re.sub(r"\bin:", "in_:", line)
            if not _parses(line):
                line = re.sub(r"\s*=\s*[^,()]+(?=[,)])", "", line)
            line = re.sub(r"(->|:)\s*(\.\.\.|capsule)(?=[,):])", r"\1 typing.Any", line)
        line = re.sub(r"^(\s+\w+):\s*\.\.\.\s*$", r"\1: typing.Any", line)  # attribute typed "..."
        if shadowed_bool and line.startswith(" "):
            line = re.sub(r"(->\s*|:\s*|\[|,\s*)bool(?!\w)", r"\1builtins.bool", line)
        out.append(line)
    head = 1 if out and out[0].startswith("from __future__") else 0
    if shadowed_bool:
        out.insert(head, "import builtins")
    if "typing_extensions." in text and not re.search(r"^import typing_extensions", text, re.M):
        out.insert(head, "import typing_extensions")
    return "\n".join(out) + "\n"


def _parses(def_line: str) -> bool:
    try:
        ast.parse(def_line.strip() + " ...")
    except SyntaxError:
        return False
    return True


def copy_repaired(dst: str | Path) -> list[Path]:
    """Write the repaired stubs under ``dst`` (plus an empty ``tensorrt_libs`` they import)."""
    written = []
    for rel, src in stub_files().items():
        path = Path(dst) / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(repair(src.read_text()))
        written.append(path)
    libs = Path(dst) / "tensorrt_libs" / "__init__.pyi"
    libs.parent.mkdir(parents=True, exist_ok=True)
    libs.write_text("")
    return written


def surface() -> dict[str, Member]:
    """Every module-level name of ``tensorrt`` and every class member, as "Class.member" (nested
    classes too: "ILogger.Severity.WARNING"), members of base classes included."""
    files = stub_files()
    bindings = ast.parse(repair(files["tensorrt_bindings/tensorrt.pyi"].read_text()))
    top = ast.parse(repair(files["tensorrt/__init__.pyi"].read_text()))
    classes: dict[str, ast.ClassDef] = {}
    _collect_classes(bindings.body, "", classes)
    out: dict[str, Member] = {}
    for qual, cls in classes.items():
        out[qual] = Member("class")
        for base in _mro(qual, classes):
            for name, member in _members(classes[base]).items():
                out.setdefault(f"{qual}.{name}", member)
    for node in top.body:
        if isinstance(node, ast.ImportFrom):
            for alias in node.names:
                name = alias.asname or alias.name
                out.setdefault(name, Member("class") if name in classes else Member("method"))
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            out[node.target.id] = Member("property")
        elif isinstance(node, ast.FunctionDef):
            out[node.name] = Member("method", (_arity(node, False),))
    return out


def _collect_classes(body: list[ast.stmt], prefix: str, into: dict[str, ast.ClassDef]) -> None:
    for node in body:
        if isinstance(node, ast.ClassDef):
            into[prefix + node.name] = node
            _collect_classes(node.body, f"{prefix}{node.name}.", into)


def _mro(qual: str, classes: dict[str, ast.ClassDef]) -> list[str]:
    order, todo = [], [qual]
    while todo:
        name = todo.pop(0)
        if name in classes and name not in order:
            order.append(name)
            todo += [ast.unparse(b).split(".")[-1] for b in classes[name].bases]
    return order


def _members(cls: ast.ClassDef) -> dict[str, Member]:
    found: dict[str, Member] = {}
    for node in cls.body:
        if isinstance(node, ast.FunctionDef):
            decos = {ast.unparse(d) for d in node.decorator_list}
            if "property" in decos or any(d.endswith(".setter") for d in decos):
                found[node.name] = Member("property")
            else:
                prev = found.get(node.name)
                arities = (prev.arities if prev and prev.kind == "method" else ()) + (
                    _arity(node, "staticmethod" not in decos),)
                found[node.name] = Member("method", arities)
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            found[node.target.id] = Member("property")
        elif isinstance(node, ast.ClassDef):
            found[node.name] = Member("class")
    return found


def _arity(fn: ast.FunctionDef, bound: bool) -> tuple[int, int]:
    n = len(fn.args.posonlyargs) + len(fn.args.args)
    n = n - 1 if bound and n else n
    return n - len(fn.args.defaults), n


# --------------------------------------------------------------------------- our code vs the surface
REPO = Path(__file__).resolve().parents[2]
OUR_TENSORRT_CODE = tuple(REPO / p for p in (
    "bonedeploy/export/tensorrt.py", "bonedeploy/backends/tensorrt.py", "bonedeploy/backends/device_facts.py"))


def trt_references(source: str) -> set[str]:
    """Dotted names under ``trt`` a module's code touches ("Logger.WARNING", "Runtime"), including
    ``getattr(trt.X, "NAME", ...)`` probes as "X.NAME"."""
    tree = ast.parse(source)
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "getattr" \
                and len(node.args) >= 2 and isinstance(node.args[1], ast.Constant):
            base = _dotted(node.args[0])
            if base and base.startswith("trt"):
                found.add(".".join([*base.split(".")[1:], str(node.args[1].value)]))
        if isinstance(node, ast.Attribute):
            dotted = _dotted(node)
            if dotted and dotted.split(".")[0] == "trt":
                found.add(dotted.split(".", 1)[1])
    # generic module attributes (__file__, __path__) are not TensorRT's API; __version__ is
    found = {n for n in found if not n.startswith("__") or n == "__version__"}
    return found | {n.split(".")[0] for n in found}


def attribute_names(source: str) -> set[str]:
    """Every ``x.name`` attribute name a module's code uses (what a stand-in must really offer)."""
    return {n.attr for n in ast.walk(ast.parse(source)) if isinstance(n, ast.Attribute)}


def _dotted(node: ast.AST) -> str | None:
    parts = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if isinstance(node, ast.Name):
        return ".".join([node.id, *reversed(parts)])
    return None


def reference_problems(refs: set[str], surf: dict[str, Member]) -> list[str]:
    return sorted([f"trt.{r}: not in TensorRT 10.13" for r in refs if r not in surf]
                  + [f"trt.{r}: removed in TensorRT 11" for r in refs if r in REMOVED_IN_TRT11])


def stand_in_problems(stand_ins: dict[str, object], used: set[str], surf: dict[str, Member]) -> list[str]:
    """For each stand-in (real TensorRT name -> our class), every public member our code uses must
    exist in TensorRT, not be removed in 11, and be the same kind (method/property) with an arity
    TensorRT accepts. Slot/instance attributes are the stand-in's own bookkeeping and not walked.
    The key "" stands for the ``tensorrt`` module itself."""
    import inspect

    problems = []
    for real, fake in stand_ins.items():
        if real and real not in surf:
            problems.append(f"{real}: no such TensorRT name")
            continue
        for name, obj in vars(fake).items():
            if name.startswith("_") or name not in used or inspect.ismemberdescriptor(obj):
                continue
            qual = f"{real}.{name}" if real else name
            member = surf.get(qual)
            if member is None or qual in REMOVED_IN_TRT11:
                problems.append(f"{qual}: {'removed in TensorRT 11' if member else 'not in TensorRT 10.13'}")
            elif isinstance(obj, property) and member.kind == "method":
                problems.append(f"{qual}: a method in TensorRT, a property in the stand-in")
            elif inspect.isfunction(obj):
                if member.kind != "method":
                    problems.append(f"{qual}: a {member.kind} in TensorRT, a method in the stand-in")
                    continue
                params = list(inspect.signature(inspect.unwrap(obj)).parameters.values())[1:]
                if any(p.kind is p.VAR_POSITIONAL for p in params):
                    continue
                lo = sum(p.default is p.empty for p in params)
                hi = len(params)
                if member.arities and not any(a <= hi and lo <= b for a, b in member.arities):
                    real_ranges = "/".join(sorted({f"{a}..{b}" for a, b in member.arities}))
                    problems.append(f"{qual}: takes {lo}..{hi} arguments in the stand-in, {real_ranges} in TensorRT")
    return problems
