"""The engine sidecar ``model.trt.json``: what an engine was built with, checked before loading.

TensorRT engines are not portable across TensorRT versions or GPUs; deserialising a foreign one
returns ``None`` (and a ``NoneType`` traceback later). The sidecar records the build facts so the
loader can say what differs and how to rebuild instead. Torch- and TensorRT-free at import.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from bonedeploy.artefacts.card import ModelCard
from bonedeploy.errors import ArtefactError, IncompatibleEngineError
from bonedeploy.util.fs import write_json

SIDECAR_FORMAT = "bonedeploy.trt-sidecar/1"
# Facts that must match exactly: a TensorRT engine is tied to its TensorRT build and GPU.
FATAL = ("tensorrt", "gpu_name", "compute_capability")
# Facts that are recorded and reported, but a mismatch only warns (newer drivers load old engines).
ADVISORY = ("cuda_runtime", "driver")


def sidecar_path(engine: str | Path) -> Path:
    """``model.trt`` -> ``model.trt.json``."""
    engine = Path(engine)
    return engine.with_name(engine.name + ".json")


def build_sidecar(facts: dict[str, Any], card: ModelCard, profile: dict[str, Any], onnx_file: str | Path,
                  onnx_sha256: str, built_at: str, build_seconds: float | None = None,
                  workspace_bytes: int | None = None) -> dict[str, Any]:
    return {
        "format": SIDECAR_FORMAT,
        **{k: facts.get(k) for k in FATAL + ADVISORY},
        "cuda_driver_api": facts.get("cuda_driver_api"),
        "precision": card.precision,
        "profile": profile,
        "onnx": {"file": Path(onnx_file).name, "sha256": onnx_sha256},
        "preprocess": card.preprocess.to_dict(),
        "classes": list(card.classes),
        "model": card.model,
        "card": card.to_dict(),
        "built_at": built_at,
        "build_seconds": build_seconds,
        "workspace_bytes": workspace_bytes,
    }


def write_sidecar(engine: str | Path, sidecar: dict[str, Any]) -> Path:
    path = sidecar_path(engine)
    write_json(path, sidecar)
    return path


def read_sidecar(engine: str | Path) -> dict[str, Any]:
    """The sidecar beside ``engine``; ``ArtefactError`` naming it when missing or malformed."""
    path = sidecar_path(engine)
    how = f"rebuild with `bonedeploy export {_onnx_hint(None, engine)}`"
    if not path.is_file():
        raise ArtefactError(f"{path}: missing; the engine {Path(engine).name} cannot be checked "
                            f"against this TensorRT/GPU; {how}")
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise ArtefactError(f"{path}: unreadable sidecar ({e}); {how}") from e
    if not isinstance(data, dict) or data.get("format") != SIDECAR_FORMAT:
        raise ArtefactError(f"{path}: not a bonedeploy engine sidecar (format "
                            f"{data.get('format') if isinstance(data, dict) else None!r}); {how}")
    return data


def card_from_sidecar(sidecar: dict[str, Any], where: str = "sidecar") -> ModelCard:
    return ModelCard.from_dict(sidecar.get("card") or {}, where)


def check_compatible(sidecar: dict[str, Any], facts: dict[str, Any], engine: str | Path | None = None) -> list[str]:
    """Raise ``IncompatibleEngineError`` naming every fatal difference (TensorRT version, GPU,
    compute capability) and how to rebuild; return advisory differences (CUDA, driver) as notes."""
    where = str(engine) if engine is not None else "engine"
    fatal = [_differs(k, sidecar.get(k), facts.get(k)) for k in FATAL
             if sidecar.get(k) is not None and facts.get(k) is not None and str(sidecar[k]) != str(facts[k])]
    if fatal:
        raise IncompatibleEngineError(
            f"{where} was built for another setup: {'; '.join(fatal)}. Engines are tied to the "
            f"TensorRT version and GPU they were built with; rebuild with "
            f"`bonedeploy export {_onnx_hint(sidecar, engine)}` on this machine")
    return [_differs(k, sidecar.get(k), facts.get(k)) for k in ADVISORY
            if sidecar.get(k) is not None and facts.get(k) is not None and str(sidecar[k]) != str(facts[k])]


def _differs(key: str, built: Any, here: Any) -> str:
    label = {"tensorrt": "TensorRT", "gpu_name": "GPU", "compute_capability": "compute capability",
             "cuda_runtime": "CUDA runtime", "driver": "driver"}.get(key, key)
    return f"{label} {built} at build, {here} here"


def _onnx_hint(sidecar: dict[str, Any] | None, engine: str | Path | None) -> str:
    """The ONNX file the engine came from (recorded), else ``model.onnx``, beside the engine."""
    name = ((sidecar or {}).get("onnx") or {}).get("file") or "model.onnx"
    return str(Path(engine).parent / name) if engine is not None else name
