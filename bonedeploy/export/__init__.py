"""Export a checkpoint to ONNX (fp32, fp16, int8 QDQ) and a TensorRT engine.

Precision lives in the ONNX file (DESIGN.md section 3): TensorRT 11 removed the fp16/int8 builder
flags and calibrators, so the engine is built strongly typed from whichever ONNX variant is asked
for, which works on TensorRT 10 and 11 alike.

Modules: ``onnx`` (torch -> fp32 ONNX, checks, metadata), ``precision`` (fp16, int8),
``tensorrt`` (engine builder), ``sidecar`` (engine facts and compatibility check), ``pipeline``
(the one function the CLI calls). This package file imports neither torch nor onnx: the naming
helpers below are used by ``bench`` and ``infer`` on machines that have neither.
"""

from __future__ import annotations

from pathlib import Path

PRECISIONS: tuple[str, ...] = ("fp32", "fp16", "int8")
"""Every ONNX precision we export, in the order they are produced (fp16/int8 derive from fp32)."""

DEFAULT_PRECISIONS: tuple[str, ...] = ("fp32", "fp16")
ENGINE_SUFFIX = ".trt"
BASE_NAME = "model"


def onnx_filename(precision: str, base: str = BASE_NAME) -> str:
    """``model.onnx`` for fp32, ``model.fp16.onnx`` / ``model.int8.onnx`` otherwise."""
    if precision not in PRECISIONS:
        raise ValueError(f"unknown precision {precision!r}; valid: {', '.join(PRECISIONS)}")
    return f"{base}.onnx" if precision == "fp32" else f"{base}.{precision}.onnx"


def engine_path_for(onnx_path: str | Path, out_dir: str | Path | None = None) -> Path:
    """``model.fp16.onnx`` -> ``model.trt`` (beside it, or in ``out_dir``): one engine per folder
    stem, whichever precision it was built from (the sidecar records that)."""
    onnx_path = Path(onnx_path)
    stem = onnx_path.name.split(".", 1)[0] or BASE_NAME
    return Path(out_dir or onnx_path.parent) / f"{stem}{ENGINE_SUFFIX}"


__all__ = ["BASE_NAME", "DEFAULT_PRECISIONS", "ENGINE_SUFFIX", "PRECISIONS", "engine_path_for",
           "onnx_filename"]
