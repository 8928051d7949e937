"""Inference backends: torch (.pt), onnxruntime (.onnx), tensorrt (.trt/.engine/.plan)."""

from bonedeploy.backends.base import (
    Backend,
    backend_for_path,
    get_backend,
    is_remote,
    list_backends,
    open_backend,
    register_backend,
)

__all__ = ["Backend", "backend_for_path", "get_backend", "is_remote", "list_backends", "open_backend", "register_backend"]
