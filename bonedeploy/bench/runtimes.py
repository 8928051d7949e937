"""Rows for every runtime that can run an artefact: OpenVINO beside onnxruntime for each
``.onnx`` (whenever OpenVINO is installed), and OpenVINO IR files found in the run directory."""

from __future__ import annotations

import importlib.util
from dataclasses import replace
from pathlib import Path

from bonedeploy.backends.select import candidates
from bonedeploy.bench.targets import Target

LABELS = {"openvino": "OpenVINO", "onnxruntime": "ONNX"}


def openvino_installed() -> bool:
    return importlib.util.find_spec("openvino") is not None


def openvino_twin(t: Target) -> Target:
    """The same file, run by OpenVINO; key ``openvino-int8`` beside ``onnx-int8``."""
    return replace(t, key="openvino-" + t.key.removeprefix("onnx-"), backend="openvino",
                   label=t.label.replace("ONNX", "OpenVINO", 1), requires=(), options={})


def ir_target(path: Path) -> Target:
    name = path.name.lower()
    prec = next((p for p in ("fp16", "int8") if f".{p}." in name), "fp32")
    return Target(f"openvino-ir-{path.stem}", f"OpenVINO IR {prec} ({path.name})", path, "openvino",
                  prec)


def add_runtime_rows(targets: list[Target], run_dir: str | Path | None = None,
                     force: bool = False) -> list[Target]:
    """``targets`` with an OpenVINO row after each ONNX row, plus IR files in ``run_dir``; when
    OpenVINO is missing, only if ``force`` (asked for by name: the rows then say why they cannot run)."""
    if not (force or openvino_installed()):
        return targets
    out: list[Target] = []
    keys = {t.key for t in targets}
    for t in targets:
        out.append(t)
        if t.backend == "onnxruntime" and "openvino" in candidates(t.path):
            twin = openvino_twin(t)
            if twin.key not in keys:
                out.append(twin)
    if run_dir is not None and Path(run_dir).is_dir():
        named = {Path(t.path).resolve() for t in targets}
        for xml in sorted(Path(run_dir).glob("*.xml")):
            if xml.with_suffix(".bin").is_file() and xml.resolve() not in named:
                out.append(ir_target(xml))
    return out


def collect(artefacts: list[Path], run_dir: Path | None, compile: bool = False,
            other_runtimes: bool = True, backends: tuple[str, ...] = ()) -> list[Target]:
    """``bench.targets.collect_targets`` plus OpenVINO rows (unless ``other_runtimes`` is off);
    ``.xml`` IR files may be named too. ``backends``: only rows of these (and the reference)."""
    from bonedeploy.bench.targets import collect_targets

    ir = [Path(a) for a in artefacts if Path(a).suffix.lower() == ".xml"]
    rest = [a for a in artefacts if Path(a).suffix.lower() != ".xml"]
    if ir and not rest:
        targets = collect_targets([], run_dir, compile)[:1] if run_dir else []
        targets = [t for t in targets if t.reference and Path(t.path).is_file()]
    else:
        targets = collect_targets(rest, run_dir, compile)
    if other_runtimes or "openvino" in backends:
        targets = add_runtime_rows(targets, run_dir if not artefacts else None, "openvino" in backends)
    targets += [ir_target(p) for p in ir]
    return [t for t in targets if not backends or t.backend in backends or t.reference]


def local_backends() -> tuple[str, ...]:
    """The registered backends that run a file here (not a server's URL, as triton does); sorted,
    because registration order depends on which backend modules were imported first."""
    from bonedeploy.backends.base import get_backend, list_backends

    return tuple(sorted(n for n in list_backends() if not get_backend(n).schemes))


def bench_backends() -> tuple[str, ...]:
    """What ``bench --backend`` takes: every local backend, and bench's own modes."""
    from bonedeploy.bench.targets import BENCH_ONLY_BACKENDS

    return (*local_backends(), *BENCH_ONLY_BACKENDS)
