"""Which artefacts to benchmark, and whether each can run here.

A run/export directory holds ``best.pt`` and the files ``bonedeploy export`` writes. Every
expected artefact becomes a :class:`Target`, present or not, so the report lists what could not
run and why (Ultralytics' benchmark table does the same) instead of silently dropping it.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass, field, replace
from functools import lru_cache
from pathlib import Path
from typing import Any

from bonedeploy.errors import ConfigError
from bonedeploy.artefacts.naming import BASE_NAME, ENGINE_SUFFIX, ENGINE_SUFFIXES, PRECISIONS, onnx_filename

STATUS_OK = "ok"
STATUS_MISSING = "missing"          # the file is not there
STATUS_UNAVAILABLE = "unavailable"  # runtime or device missing on this machine
STATUS_INCOMPATIBLE = "incompatible"  # engine built for another TensorRT/GPU
STATUS_ERROR = "error"              # failed while loading or running
STATUS_GATE = "gate failed"         # ran, but parity with the reference fails its gate

TORCH_COMPILE = "torch-compile"  # a bench-only mode, not a registered backend (bench.run.OPENERS)
BENCH_ONLY_BACKENDS = (TORCH_COMPILE,)
CHECKPOINT = "best.pt"
ONNX_FILES = {p: onnx_filename(p) for p in PRECISIONS}  # model.onnx, model.fp16.onnx, ...
ENGINE_FILE = BASE_NAME + ENGINE_SUFFIX
EXPORT_HINT = "make it with `bonedeploy export {ckpt} --precision fp32,fp16,int8`"


@dataclass(frozen=True)
class Target:
    """One row of the benchmark: a file run by one backend in one mode."""

    key: str
    label: str
    path: Path
    backend: str
    precision: str
    options: dict[str, Any] = field(default_factory=dict)
    requires: tuple[str, ...] = ()
    reference: bool = False
    hint: str | None = None  # how to make a missing file
    per_batch: bool = False  # re-open for each batch size with ``batch_size`` (CUDA graphs)

    def to_dict(self) -> dict[str, Any]:
        return {"key": self.key, "label": self.label, "path": str(self.path), "backend": self.backend,
                "precision": self.precision, "options": dict(self.options),
                "reference": self.reference}


def torch_targets(path: Path, compile: bool = False) -> list[Target]:
    """The PyTorch modes of one checkpoint: fp32 eager is the reference everything compares to."""
    req_gpu = ("torch", "cuda")
    targets = [
        Target("torch-fp32", "PyTorch fp32", path, "torch", "fp32", {"device": "auto"},
               ("torch",), reference=True),
        Target("torch-fp16", "PyTorch fp16", path, "torch", "fp16",
               {"device": "cuda", "precision": "fp16"}, req_gpu),
        Target("torch-fp16-graph", "PyTorch fp16 + CUDA graph", path, "torch", "fp16",
               {"device": "cuda", "precision": "fp16", "cuda_graph": True}, req_gpu,
               per_batch=True),
    ]
    if compile:  # fp16 on a GPU, fp32 on the CPU: chosen when it is opened
        targets.append(Target(TORCH_COMPILE, "PyTorch torch.compile max-autotune", path,
                              TORCH_COMPILE, "auto", {"mode": "max-autotune"}, ("torch",)))
    return targets


def _onnx_precision(path: Path) -> str:
    name = path.name.lower()
    return next((p for p in ("fp16", "int8") if name.endswith(f".{p}.onnx")), "fp32")


def onnx_target(path: Path) -> Target:
    prec = _onnx_precision(path)
    key = "onnx-" + prec if path.name in ONNX_FILES.values() else f"onnx-{path.stem}"
    return Target(key, f"ONNX {prec}" + ("" if path.name in ONNX_FILES.values() else f" ({path.name})"),
                  path, "onnxruntime", prec, {}, ("onnxruntime",))


def engine_target(path: Path) -> Target:
    key = "tensorrt" if path.name == ENGINE_FILE else f"tensorrt-{path.stem}"
    return Target(key, "TensorRT" + ("" if path.name == ENGINE_FILE else f" ({path.name})"), path,
                  "tensorrt", "unknown", {}, ("tensorrt", "cuda"),
                  hint=f"build it with `bonedeploy export {path.parent / ONNX_FILES['fp16']}` on a "
                       "machine with TensorRT and an NVIDIA GPU")


def targets_for_path(path: str | Path, compile: bool = False) -> list[Target]:
    """Targets for one file named on the command line, chosen by suffix."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix in (".pt", ".pth"):
        return torch_targets(path, compile)
    if suffix == ".onnx":
        return [onnx_target(path)]
    if suffix in ENGINE_SUFFIXES:
        return [engine_target(path)]
    raise ConfigError(f"{path}: cannot benchmark a {suffix or 'suffix-less'} file; valid suffixes: "
                      f".pt, .pth, .onnx, {', '.join(ENGINE_SUFFIXES)}")


def discover(run_dir: str | Path, compile: bool = False) -> list[Target]:
    """Every artefact ``bonedeploy train``/``export`` leaves in ``run_dir``, expected ones
    included when absent (they are reported as missing, with the command that makes them)."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise ConfigError(f"{run_dir}: no such directory (pass --dir RUN_DIR or artefact files)")
    ckpt = run_dir / CHECKPOINT
    hint = EXPORT_HINT.format(ckpt=ckpt)
    targets = torch_targets(ckpt, compile)
    train_hint = f"train it with `bonedeploy train DATA --out {run_dir}`"
    targets = [t if ckpt.is_file() else _with_hint(t, train_hint) for t in targets]
    for prec, name in ONNX_FILES.items():
        targets.append(_with_hint(onnx_target(run_dir / name), hint))
    standard = set(ONNX_FILES.values())
    targets += [onnx_target(p) for p in sorted(run_dir.glob("*.onnx")) if p.name not in standard]
    engines = sorted(p for p in run_dir.iterdir() if p.suffix.lower() in ENGINE_SUFFIXES)
    targets += [engine_target(p) for p in engines] or [engine_target(run_dir / ENGINE_FILE)]
    return targets


def _with_hint(t: Target, hint: str) -> Target:
    return replace(t, hint=hint)


def collect_targets(artefacts: list[str | Path], run_dir: str | Path | None,
                    compile: bool = False) -> list[Target]:
    """Named artefacts when given (plus, as the reference, the ``best.pt`` in ``run_dir`` or
    beside the first artefact when no checkpoint is named), else everything in ``run_dir``
    (default: the current directory)."""
    if not artefacts:
        return discover(run_dir or ".", compile)
    targets = [t for a in artefacts for t in targets_for_path(a, compile)]
    ref_dir = Path(run_dir) if run_dir else Path(artefacts[0]).parent
    if not any(t.reference for t in targets) and (ref_dir / CHECKPOINT).is_file():
        targets = torch_targets(ref_dir / CHECKPOINT, compile)[:1] + targets
    seen: set[str] = set()
    unique = []
    for t in targets:
        if t.key in seen:
            t = _with_key(t, f"{t.key}:{len(seen)}")
        seen.add(t.key)
        unique.append(t)
    return unique


def _with_key(t: Target, key: str) -> Target:
    return replace(t, key=key)


# --- can it run here? ------------------------------------------------------------------------

_REQUIREMENTS = {
    "torch": "PyTorch is not installed (pip install 'bonedeploy[train]')",
    "onnxruntime": "onnxruntime is not installed (pip install onnxruntime)",
    "tensorrt": "TensorRT is not installed: engine rows need a machine with TensorRT and an NVIDIA GPU",
    "cuda": "needs a CUDA GPU; none found on this machine",
}


@lru_cache(maxsize=None)
def _has_module(name: str) -> bool:
    return importlib.util.find_spec(name) is not None


def _has_cuda() -> bool:
    if _has_module("torch"):
        import torch

        return bool(torch.cuda.is_available())
    from bonedeploy.util.machine import gpu_info

    return gpu_info() is not None


def _has_tensorrt() -> bool:
    """The real bindings, not the empty package ``tensorrt-stubs`` leaves (as the backend checks)."""
    from bonedeploy.backends.device_facts import require_tensorrt
    from bonedeploy.errors import BackendUnavailableError

    try:
        require_tensorrt()
    except BackendUnavailableError:
        return False
    return True


# Requirements that need more than an importable module.
_CHECKS = {"cuda": _has_cuda, "tensorrt": _has_tensorrt}


def precheck(target: Target) -> tuple[str, str] | None:
    """``(status, reason)`` when the target cannot run here, before anything is loaded."""
    if not target.path.is_file():
        why = f"{target.path}: no such file"
        return STATUS_MISSING, why + (f"; {target.hint}" if target.hint else "")
    for req in target.requires:
        check = _CHECKS.get(req)
        if not (check() if check else _has_module(req)):
            return STATUS_UNAVAILABLE, _REQUIREMENTS[req]
    return None
