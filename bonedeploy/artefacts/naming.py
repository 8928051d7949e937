"""File names of the exported artefacts, shared by build time (export) and the runtime (infer,
bench, backends): the edge runtime imports these without importing ``bonedeploy.export``."""

from __future__ import annotations

import re
from pathlib import Path

from bonedeploy.artefacts.card import PRECISIONS  # fp32 first: fp16/int8 derive from it

DEFAULT_PRECISIONS: tuple[str, ...] = ("fp32", "fp16")
# A TensorRT engine: ours are written as .trt; .engine and .plan are what trtexec and Triton name
# them. The one list every reader of engines uses (backend registry, bench, the Triton repository).
ENGINE_SUFFIXES: tuple[str, ...] = (".trt", ".engine", ".plan")
ENGINE_SUFFIX = ENGINE_SUFFIXES[0]
BASE_NAME = "model"
EXPLAIN_SUFFIX = ".explain.onnx"


def onnx_filename(precision: str, base: str = BASE_NAME) -> str:
    """``model.onnx`` for fp32, ``model.fp16.onnx`` / ``model.int8.onnx`` otherwise."""
    if precision not in PRECISIONS:
        raise ValueError(f"unknown precision {precision!r}; valid: {', '.join(PRECISIONS)}")
    return f"{base}.onnx" if precision == "fp32" else f"{base}.{precision}.onnx"


def explain_filename(onnx_name: str = f"{BASE_NAME}.onnx") -> str:
    """The Grad-CAM graph written beside an ONNX file (``model.explain.onnx``)."""
    return onnx_name.removesuffix(".onnx") + EXPLAIN_SUFFIX


def engine_path_for(onnx_path: str | Path, out_dir: str | Path | None = None) -> Path:
    """``model.fp16.onnx`` -> ``model.trt`` (beside it, or in ``out_dir``): one engine per folder
    stem, whichever precision it was built from (the sidecar records that)."""
    onnx_path = Path(onnx_path)
    stem = onnx_path.name.split(".", 1)[0] or BASE_NAME
    return Path(out_dir or onnx_path.parent) / f"{stem}{ENGINE_SUFFIX}"


def timing_cache_name(gpu_name: str, compute_capability: str, trt_version: str) -> str:
    """One cache per GPU model and TensorRT version: timings from another device or release are
    at best useless and TensorRT rejects mismatched caches."""
    slug = re.sub(r"[^a-z0-9]+", "-", gpu_name.lower()).strip("-") or "gpu"
    cc = str(compute_capability).replace(".", "")
    ver = re.sub(r"[^0-9a-zA-Z.]+", "-", str(trt_version))
    return f"{slug}-sm{cc}-trt{ver}.cache"


__all__ = ["BASE_NAME", "DEFAULT_PRECISIONS", "ENGINE_SUFFIX", "ENGINE_SUFFIXES", "EXPLAIN_SUFFIX", "PRECISIONS", "engine_path_for",
           "explain_filename", "onnx_filename", "timing_cache_name"]
