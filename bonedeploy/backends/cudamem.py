"""Device memory, pinned host buffers and streams for the TensorRT runner, without torch.

cuda-python's ``cuda.bindings.runtime`` first (what NVIDIA's TensorRT samples use; cuda-python >= 12.6,
as the ``tensorrt`` extra requires), pycuda when only that is installed. Every cuda-python call
returns ``(err, value...)``: the error code is checked before any value is used, and turned into a
``CudaError`` naming the call. ``open_cuda`` first asks for the device count, so a machine without
a usable driver or GPU fails there with ``BackendUnavailableError`` naming CUDA's own reason
(e.g. ``cudaErrorInsufficientDriver``), not later inside a buffer allocation.
"""

from __future__ import annotations

import ctypes
from typing import TYPE_CHECKING, Any

import numpy as np

from bonedeploy.errors import BackendUnavailableError, BonedeployError

if TYPE_CHECKING:
    from cuda.bindings import runtime as cudart

IMPLEMENTATIONS = ("auto", "cuda-python", "pycuda")


class CudaError(BonedeployError):
    """A CUDA runtime call failed (no device, out of memory, launch failure ...)."""


class CudaPython:
    """cuda-python runtime API. Streams are ``cudaStream_t``; ``handle()`` gives the int TensorRT takes."""

    name = "cuda-python"

    def __init__(self) -> None:
        from cuda.bindings import runtime as rt

        self.rt = rt
        self._pinned: dict[int, int] = {}  # id(host array) -> pinned pointer

    def describe_error(self, what: str, err: cudart.cudaError_t) -> str | None:
        """None on success, else "CUDA <call> failed: <code name> (<CUDA's description>)"."""
        if err == self.rt.cudaError_t.cudaSuccess:
            return None
        _, msg = self.rt.cudaGetErrorString(err)
        text = msg.decode(errors="replace") if isinstance(msg, bytes) else str(msg)
        return f"CUDA {what} failed: {getattr(err, 'name', err)} ({text})"

    def _check(self, what: str, err: cudart.cudaError_t) -> None:
        problem = self.describe_error(what, err)
        if problem:
            raise CudaError(problem)

    def device_count(self) -> int:
        """GPUs visible to this process; ``BackendUnavailableError`` naming CUDA's reason when the
        driver or device is missing (cudaErrorInsufficientDriver, cudaErrorNoDevice ...)."""
        err, count = self.rt.cudaGetDeviceCount()
        problem = self.describe_error("cudaGetDeviceCount", err)
        if problem:
            raise BackendUnavailableError(f"no usable CUDA device: {problem}")
        if int(count) < 1:
            raise BackendUnavailableError("no usable CUDA device: cudaGetDeviceCount found no GPU")
        return int(count)

    def device_facts(self, device: int = 0) -> dict[str, str]:
        """GPU name, compute capability and CUDA runtime/driver-API versions of ``device``."""
        self.device_count()
        err, runtime = self.rt.cudaRuntimeGetVersion()
        self._unavailable_unless_ok("cudaRuntimeGetVersion", err)
        err, driver_api = self.rt.cudaDriverGetVersion()
        self._unavailable_unless_ok("cudaDriverGetVersion", err)
        err, props = self.rt.cudaGetDeviceProperties(device)
        self._unavailable_unless_ok("cudaGetDeviceProperties", err)
        name = props.name.decode(errors="replace") if isinstance(props.name, bytes) else str(props.name)
        return {"gpu_name": name.split("\x00", 1)[0].strip(),
                "compute_capability": f"{props.major}.{props.minor}",
                "cuda_runtime": _version(runtime), "cuda_driver_api": _version(driver_api)}

    def _unavailable_unless_ok(self, what: str, err: cudart.cudaError_t) -> None:
        problem = self.describe_error(what, err)
        if problem:
            raise BackendUnavailableError(problem)

    def malloc(self, nbytes: int) -> int:
        err, ptr = self.rt.cudaMalloc(nbytes)
        self._check("cudaMalloc", err)
        return int(ptr)

    def free(self, ptr: int) -> None:
        (err,) = self.rt.cudaFree(ptr)
        self._check("cudaFree", err)

    def host_empty(self, shape: tuple[int, ...], dtype: Any) -> np.ndarray:
        """A page-locked numpy array (true async DMA; pageable memory is staged by the driver)."""
        dtype = np.dtype(dtype)
        nbytes = int(np.prod(shape)) * dtype.itemsize
        err, ptr = self.rt.cudaMallocHost(nbytes)
        self._check("cudaMallocHost", err)
        raw = (ctypes.c_byte * nbytes).from_address(int(ptr))
        arr = np.frombuffer(raw, dtype=dtype).reshape(shape)
        self._pinned[id(arr)] = int(ptr)
        return arr

    def free_host(self, arr: np.ndarray) -> None:
        ptr = self._pinned.pop(id(arr), None)
        if ptr is not None:
            (err,) = self.rt.cudaFreeHost(ptr)
            self._check("cudaFreeHost", err)

    def stream_create(self) -> cudart.cudaStream_t:
        err, stream = self.rt.cudaStreamCreate()
        self._check("cudaStreamCreate", err)
        return stream

    def handle(self, stream: Any) -> int:
        return int(stream)

    def htod_async(self, dst: int, src: np.ndarray, nbytes: int, stream: Any) -> None:
        kind = self.rt.cudaMemcpyKind.cudaMemcpyHostToDevice
        (err,) = self.rt.cudaMemcpyAsync(dst, src.ctypes.data, nbytes, kind, stream)
        self._check("cudaMemcpyAsync(H2D)", err)

    def dtoh_async(self, dst: np.ndarray, src: int, nbytes: int, stream: Any) -> None:
        kind = self.rt.cudaMemcpyKind.cudaMemcpyDeviceToHost
        (err,) = self.rt.cudaMemcpyAsync(dst.ctypes.data, src, nbytes, kind, stream)
        self._check("cudaMemcpyAsync(D2H)", err)

    def synchronize(self, stream: Any) -> None:
        (err,) = self.rt.cudaStreamSynchronize(stream)
        self._check("cudaStreamSynchronize", err)

    def stream_destroy(self, stream: Any) -> None:
        (err,) = self.rt.cudaStreamDestroy(stream)
        self._check("cudaStreamDestroy", err)


def _version(v: int) -> str:
    """12060 -> "12.6"."""
    return f"{int(v) // 1000}.{int(v) % 1000 // 10}"


class PyCuda:
    """pycuda driver API (pycuda.autoinit makes the context TensorRT then uses)."""

    name = "pycuda"

    def __init__(self, drv: Any):
        self.drv = drv
        self._allocs: dict[int, Any] = {}

    def _call(self, what: str, fn: Any, *args: Any) -> Any:
        try:
            return fn(*args)
        except self.drv.Error as e:
            raise CudaError(f"CUDA {what} failed ({e})") from e

    def malloc(self, nbytes: int) -> int:
        alloc = self._call("mem_alloc", self.drv.mem_alloc, nbytes)
        self._allocs[int(alloc)] = alloc
        return int(alloc)

    def free(self, ptr: int) -> None:
        alloc = self._allocs.pop(ptr, None)
        if alloc is not None:
            alloc.free()

    def host_empty(self, shape: tuple[int, ...], dtype: Any) -> np.ndarray:
        arr: np.ndarray = self._call("pagelocked_empty", self.drv.pagelocked_empty, shape, dtype)
        return arr

    def free_host(self, arr: np.ndarray) -> None:
        pass  # pycuda frees page-locked memory with the array

    def stream_create(self) -> Any:
        return self._call("Stream", self.drv.Stream)

    def handle(self, stream: Any) -> int:
        return int(stream.handle)

    def htod_async(self, dst: int, src: np.ndarray, nbytes: int, stream: Any) -> None:
        view = src.reshape(-1).view(np.uint8)[:nbytes]
        self._call("memcpy_htod_async", self.drv.memcpy_htod_async, dst, view, stream)

    def dtoh_async(self, dst: np.ndarray, src: int, nbytes: int, stream: Any) -> None:
        view = dst.reshape(-1).view(np.uint8)[:nbytes]
        self._call("memcpy_dtoh_async", self.drv.memcpy_dtoh_async, view, src, stream)

    def synchronize(self, stream: Any) -> None:
        self._call("Stream.synchronize", stream.synchronize)

    def stream_destroy(self, stream: Any) -> None:
        pass


CudaBinding = CudaPython | PyCuda


def open_cuda(implementation: str | None = None) -> CudaBinding:
    """The first CUDA binding that imports and sees a GPU: cuda-python, then pycuda (or the one
    asked for). ``BackendUnavailableError`` listing each binding's reason when none does."""
    implementation = implementation or "auto"
    if implementation not in IMPLEMENTATIONS:
        raise BackendUnavailableError(f"unknown CUDA binding {implementation!r}; valid: {', '.join(IMPLEMENTATIONS)}")
    errors: list[str] = []
    last: Exception | None = None
    if implementation in ("auto", "cuda-python"):
        try:
            mem = CudaPython()
            mem.device_count()
        except ImportError as e:
            errors.append(f"cuda-python is not installed ({e}; pip install cuda-python)")
            last = e
        except BackendUnavailableError as e:
            if implementation == "cuda-python":
                raise
            errors.append(f"cuda-python: {e}")
            last = e
        else:
            return mem
    if implementation in ("auto", "pycuda"):
        try:
            import pycuda.autoinit  # noqa: F401  creates the CUDA context
            import pycuda.driver as drv
        except Exception as e:  # ImportError, or pycuda's own Error when no device/context
            errors.append(f"pycuda: {e}")
            last = e
        else:
            return PyCuda(drv)
    raise BackendUnavailableError("the tensorrt backend needs a CUDA GPU through cuda-python or pycuda; "
                                  + "; ".join(errors)) from last
