"""What this process runs on, for TensorRT engines: TensorRT, CUDA and the GPU.

The sidecar (``bonedeploy.artefacts.sidecar``) records these facts at build time and compares
them at load time; gathering them needs the CUDA layer, so they live with the backends.
TensorRT and cuda-python are imported inside the functions only.
"""

from __future__ import annotations

from typing import Any

from bonedeploy.errors import BackendUnavailableError

INSTALL_HINT = ("it needs TensorRT and cuda-python (bonedeploy's 'tensorrt' extra) and an NVIDIA GPU")


def require_tensorrt(hint: str = INSTALL_HINT) -> None:
    """``BackendUnavailableError`` unless ``import tensorrt`` gives the real TensorRT bindings.

    Installing only ``tensorrt-stubs`` (type checking) leaves a ``tensorrt/`` folder of ``.pyi``
    files that imports as an empty namespace package: that is "not installed", not a broken
    TensorRT with a missing ``Runtime``. Callers then ``import tensorrt`` themselves, typed.
    """
    try:
        import tensorrt as trt
    except ImportError as e:
        raise BackendUnavailableError(f"TensorRT is not installed here ({e}); {hint}") from e
    if not isinstance(getattr(trt, "__version__", None), str):
        where = ", ".join(getattr(trt, "__path__", None) or [str(getattr(trt, "__file__", "?"))])
        raise BackendUnavailableError(
            f"TensorRT is not installed here: `import tensorrt` finds {where}, which is not the "
            f"TensorRT bindings (only tensorrt-stubs installed?); {hint}")


def runtime_facts() -> dict[str, Any]:
    """TensorRT version, CUDA runtime/driver versions and the GPU of this process (device 0).

    Needs ``tensorrt`` and cuda-python (``cuda.bindings.runtime``); imported here only.
    """
    require_tensorrt()
    import tensorrt as trt

    return {"tensorrt": str(trt.__version__), **cuda_facts()}


def cuda_facts(device: int = 0) -> dict[str, Any]:
    """GPU name, compute capability and CUDA versions via cuda-python; driver from nvidia-smi.
    Without cuda-python, nvidia-smi alone gives name, compute capability and driver."""
    from bonedeploy.backends.cudamem import CudaPython
    from bonedeploy.util.machine import gpu_info

    try:
        cuda = CudaPython()
    except ImportError as e:
        smi = gpu_info()
        if smi:
            return {"gpu_name": smi["name"], "compute_capability": smi["compute_capability"],
                    "cuda_runtime": None, "cuda_driver_api": None, "driver": smi["driver"]}
        raise BackendUnavailableError(f"cuda-python (cuda.bindings) is not installed ({e}) and "
                                      "nvidia-smi finds no GPU; pip install cuda-python") from e
    facts: dict[str, Any] = dict(cuda.device_facts(device))
    facts["driver"] = (gpu_info() or {}).get("driver")
    return facts
