"""Inference backends: torch (.pt), onnxruntime (.onnx), openvino (.xml, or .onnx when asked),
tensorrt (the engine suffixes of ``artefacts.naming``), triton (grpc:// and http:// URLs)."""

from bonedeploy.backends.base import (
    Backend,
    FileBackend,
    backend_for_path,
    get_backend,
    is_remote,
    list_backends,
    open_backend,
    register_backend,
)

__all__ = ["Backend", "FileBackend", "backend_for_path", "get_backend", "is_remote", "list_backends", "open_backend", "register_backend"]
