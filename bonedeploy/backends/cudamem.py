"""Device memory, pinned host buffers and streams for the TensorRT runner, without torch.

cuda-python's ``cuda.bindings.runtime`` first (what NVIDIA's TensorRT samples use since 10.14; the
older ``cuda.cudart`` module has the same calls), pycuda when only that is installed. Every CUDA
call's error code is checked and turned into a ``CudaError`` naming the call.
"""

from __future__ import annotations

import ctypes
from typing import Any

import numpy as np

from bonedeploy.errors import BackendUnavailableError, BonedeployError

IMPLEMENTATIONS = ("auto", "cuda-python", "pycuda")


class CudaError(BonedeployError):
    """A CUDA runtime call failed (no device, out of memory, launch failure ...)."""


class CudaPython:
    """cuda-python runtime API. Streams are ``cudaStream_t``; ``handle()`` gives the int TensorRT takes."""

    name = "cuda-python"

    def __init__(self, rt: Any):
        self.rt = rt
        self._pinned: dict[int, int] = {}  # id(host array) -> pinned pointer

    def _call(self, what: str, result: Any) -> Any:
        err, *rest = result if isinstance(result, tuple) else (result,)
        if err != self.rt.cudaError_t.cudaSuccess:
            _, msg = self.rt.cudaGetErrorString(err)
            text = msg.decode() if isinstance(msg, bytes) else str(msg)
            raise CudaError(f"CUDA {what} failed: {getattr(err, 'name', err)} ({text})")
        return rest[0] if len(rest) == 1 else (tuple(rest) or None)

    def malloc(self, nbytes: int) -> int:
        return int(self._call("cudaMalloc", self.rt.cudaMalloc(nbytes)))

    def free(self, ptr: int) -> None:
        self._call("cudaFree", self.rt.cudaFree(ptr))

    def host_empty(self, shape: tuple[int, ...], dtype: Any) -> np.ndarray:
        """A page-locked numpy array (true async DMA; pageable memory is staged by the driver)."""
        dtype = np.dtype(dtype)
        nbytes = int(np.prod(shape)) * dtype.itemsize
        ptr = int(self._call("cudaMallocHost", self.rt.cudaMallocHost(nbytes)))
        raw = (ctypes.c_byte * nbytes).from_address(ptr)
        arr = np.frombuffer(raw, dtype=dtype).reshape(shape)
        self._pinned[id(arr)] = ptr
        return arr

    def free_host(self, arr: np.ndarray) -> None:
        ptr = self._pinned.pop(id(arr), None)
        if ptr is not None:
            self._call("cudaFreeHost", self.rt.cudaFreeHost(ptr))

    def stream_create(self) -> Any:
        return self._call("cudaStreamCreate", self.rt.cudaStreamCreate())

    def handle(self, stream: Any) -> int:
        return int(stream)

    def htod_async(self, dst: int, src: np.ndarray, nbytes: int, stream: Any) -> None:
        kind = self.rt.cudaMemcpyKind.cudaMemcpyHostToDevice
        self._call("cudaMemcpyAsync(H2D)", self.rt.cudaMemcpyAsync(dst, src.ctypes.data, nbytes, kind, stream))

    def dtoh_async(self, dst: np.ndarray, src: int, nbytes: int, stream: Any) -> None:
        kind = self.rt.cudaMemcpyKind.cudaMemcpyDeviceToHost
        self._call("cudaMemcpyAsync(D2H)", self.rt.cudaMemcpyAsync(dst.ctypes.data, src, nbytes, kind, stream))

    def synchronize(self, stream: Any) -> None:
        self._call("cudaStreamSynchronize", self.rt.cudaStreamSynchronize(stream))

    def stream_destroy(self, stream: Any) -> None:
        self._call("cudaStreamDestroy", self.rt.cudaStreamDestroy(stream))


class PyCuda:
    """pycuda driver API (pycuda.autoinit makes the context TensorRT then uses)."""

    name = "pycuda"

    def __init__(self, drv: Any):
        self.drv = drv
        self._allocs: dict[int, Any] = {}

    def _call(self, what: str, fn, *args):
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
        return self._call("pagelocked_empty", self.drv.pagelocked_empty, shape, dtype)

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


def open_cuda(implementation: str | None = None) -> CudaPython | PyCuda:
    """The first CUDA binding that imports: cuda-python, then pycuda (or the one asked for)."""
    implementation = implementation or "auto"
    if implementation not in IMPLEMENTATIONS:
        raise BackendUnavailableError(f"unknown CUDA binding {implementation!r}; valid: {', '.join(IMPLEMENTATIONS)}")
    errors = []
    if implementation in ("auto", "cuda-python"):
        try:
            from cuda.bindings import runtime as rt
        except ImportError as e:
            try:
                from cuda import cudart as rt  # cuda-python < 12.6 layout
            except ImportError:
                errors.append(f"cuda-python: {e}")
                rt = None
        if rt is not None:
            return CudaPython(rt)
    if implementation in ("auto", "pycuda"):
        try:
            import pycuda.autoinit  # noqa: F401  creates the CUDA context
            import pycuda.driver as drv
        except Exception as e:  # ImportError, or pycuda's own Error when no device/context
            errors.append(f"pycuda: {e}")
        else:
            return PyCuda(drv)
    raise BackendUnavailableError(
        "the tensorrt backend needs cuda-python (pip install cuda-python) or pycuda; "
        + "; ".join(errors))
