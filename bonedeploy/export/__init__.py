"""Export a checkpoint to ONNX (fp32, fp16, int8 QDQ) and a TensorRT engine.

Precision lives in the ONNX file: TensorRT 11 removed the fp16/int8 builder flags and calibrators,
so the engine is built strongly typed from whichever ONNX variant is asked for, which works on
TensorRT 10 and 11 alike.

Modules: ``onnx`` (torch -> fp32 ONNX, checks, metadata), ``precision`` (fp16, int8),
``tensorrt`` (engine builder), ``profiles`` (packaged TOML recipes, ``profiles/``), ``results``
(the shared types), ``gate`` (parity of every file through the backends), ``from_checkpoint``
(the one function the CLI calls) and ``from_onnx`` (the engine half). File names and the engine sidecar
are on-disk contracts shared with the runtime: they live in ``bonedeploy.artefacts``.

``export_config(source, profile, **overrides)`` merges a profile with the caller's settings, as
``bonedeploy export --profile`` does: ``run_export(export_config("best.pt", "edge-cpu"))``.
"""

from bonedeploy.export.profiles import export_config

__all__ = ["export_config"]
