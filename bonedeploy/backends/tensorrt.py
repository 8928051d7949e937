"""TensorRT backend for engine files (``artefacts.naming.ENGINE_SUFFIXES``; TensorRT 10 tensor API),
without torch.

Order matters: the JSON sidecar is read and checked against this machine (TensorRT/CUDA versions,
GPU) *before* deserialising, because a mismatched engine either fails with a bare ``None`` or, worse,
loads and computes garbage. Then: one execution context, page-locked host buffers and device
buffers sized for the profile's largest batch, bound once with ``set_tensor_address``; per chunk
``set_input_shape`` (within the optimisation profile: larger batches are split, a batch below the
profile's minimum is zero-padded), async H2D copy, ``execute_async_v3``, async D2H copy, one sync.

``profile`` selects an optimisation profile on the context (``bonedeploy export`` builds one,
profile 0; engines built elsewhere may have more): its batch range is used for splitting and
padding. ``tensorrt`` is imported in ``load()`` only, typed against tensorrt-stubs.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from bonedeploy.artefacts.naming import ENGINE_SUFFIXES
from bonedeploy.artefacts.ood import OOD_OUTPUT
from bonedeploy.backends.base import FileBackend, register_backend
from bonedeploy.backends.cudamem import IMPLEMENTATIONS, CudaBinding, CudaError, open_cuda
from bonedeploy.backends.options import Option
from bonedeploy.errors import ArtefactError, ConfigError

if TYPE_CHECKING:
    import tensorrt as trt

REBUILD = "rebuild it on this machine with `bonedeploy export model.onnx`"
NEEDS = ("the tensorrt backend needs TensorRT and a CUDA GPU; on a machine without them run the "
         ".onnx file with the onnxruntime backend")


def plan_chunks(n: int, min_batch: int, max_batch: int) -> list[tuple[int, int, int]]:
    """Split ``n`` samples into (start, count, run_size) chunks the profile accepts:
    ``count <= max_batch`` and ``run_size = max(count, min_batch)`` (the rest is padding)."""
    if min_batch < 1 or max_batch < min_batch:
        raise ArtefactError(f"invalid optimisation profile batch range [{min_batch}, {max_batch}]")
    return [(s, min(max_batch, n - s), max(min(max_batch, n - s), min_batch)) for s in range(0, n, max_batch)]


@register_backend
class TensorRTBackend(FileBackend):
    name = "tensorrt"
    suffixes = ENGINE_SUFFIXES
    OPTIONS = (
        Option("device", "where it runs", "auto", choices=("auto", "cuda"), note="TensorRT runs on CUDA only"),
        Option("profile", "the engine's optimisation profile index", 0, type=int, minimum=0),
        Option("cuda_binding", "the CUDA binding (auto: cuda-python, else pycuda)", "auto",
               choices=IMPLEMENTATIONS),
    )

    def __init__(self, path: str | Path, **options: Any):
        super().__init__(path, **options)
        self.profile: int = self.options["profile"]
        self.notes: list[str] = []
        self._mem: CudaBinding | None = None
        self._runtime: trt.Runtime | None = None
        self._engine: trt.ICudaEngine | None = None
        self._context: trt.IExecutionContext | None = None
        self._stream: Any = None
        self._d_in = self._d_out = self._d_ood = 0
        self._h_in: np.ndarray | None = None
        self._h_out: np.ndarray | None = None
        self._h_ood: np.ndarray | None = None  # the engine's ood_score output, when it has one

    @property
    def gives_ood_score(self) -> bool:
        return self.loaded and self._h_ood is not None

    def _open(self) -> None:
        from bonedeploy.artefacts import sidecar as sc
        from bonedeploy.backends.device_facts import require_tensorrt, runtime_facts

        side = sc.read_sidecar(self.path)  # first: no TensorRT needed to say what the engine is
        self._card = sc.card_from_sidecar(side, str(sc.sidecar_path(self.path)))
        require_tensorrt(NEEDS)
        self.notes = sc.check_compatible(side, runtime_facts(), self.path)  # advisory differences
        self._mem = open_cuda(self.options["cuda_binding"])
        try:
            self._open_engine(self._mem)
        except BaseException:
            self._close()  # free whatever was allocated before the failure
            raise

    def _open_engine(self, mem: CudaBinding) -> None:
        import tensorrt as trt

        self._runtime = trt.Runtime(trt.Logger(trt.Logger.WARNING))
        engine = self._runtime.deserialize_cuda_engine(self.path.read_bytes())
        if engine is None:
            raise ArtefactError(f"{self.path}: TensorRT could not deserialise this engine (built by "
                                f"another TensorRT version or GPU, or corrupt); {REBUILD}")
        self._engine = engine
        count = int(engine.num_optimization_profiles)
        if not 0 <= self.profile < count:
            raise ConfigError(f"tensorrt backend: profile {self.profile} does not exist in {self.path.name}; "
                              f"valid profiles: 0..{count - 1}")
        context = engine.create_execution_context()
        if context is None:
            raise CudaError(f"{self.path}: TensorRT could not create an execution context (GPU memory?)")
        self._context = context
        self._stream = mem.stream_create()
        # Without this the context runs profile 0 whatever limits were read for profile N.
        if not context.set_optimization_profile_async(self.profile, mem.handle(self._stream)):
            raise ArtefactError(f"{self.path}: TensorRT refused optimisation profile {self.profile}")
        self._bind_io(engine, context, mem)

    def _bind_io(self, engine: trt.ICudaEngine, context: trt.IExecutionContext, mem: CudaBinding) -> None:
        import tensorrt as trt

        names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
        ins = [n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        outs = [n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.OUTPUT]
        ood = [n for n in outs if n == OOD_OUTPUT]
        logits = [n for n in outs if n != OOD_OUTPUT]
        if len(ins) != 1 or len(logits) != 1:
            raise ArtefactError(f"{self.path}: expected one input and one output tensor (and "
                                f"{OOD_OUTPUT}), got {ins} -> {outs}")
        self._in, self._out = ins[0], logits[0]
        in_shape = _dims(engine.get_tensor_shape(self._in))
        out_shape = _dims(engine.get_tensor_shape(self._out))
        if in_shape[0] == -1:
            lo, _, hi = engine.get_tensor_profile_shape(self._in, self.profile)
            self._min_b, self._max_b = int(lo[0]), int(hi[0])
        else:
            self._min_b = self._max_b = int(in_shape[0])
        self._sample_in, self._sample_out = in_shape[1:], out_shape[1:]
        if any(d < 0 for d in (*self._sample_in, *self._sample_out)):
            raise ArtefactError(f"{self.path}: only the batch axis may be dynamic; input {in_shape}, "
                                f"output {out_shape}")
        in_dtype = trt.nptype(engine.get_tensor_dtype(self._in))
        out_dtype = trt.nptype(engine.get_tensor_dtype(self._out))
        self._h_in = mem.host_empty((self._max_b, *self._sample_in), in_dtype)
        self._h_out = mem.host_empty((self._max_b, *self._sample_out), out_dtype)
        self._d_in = mem.malloc(self._h_in.nbytes)
        self._d_out = mem.malloc(self._h_out.nbytes)
        bindings = [(self._in, self._d_in), (self._out, self._d_out)]
        if ood:  # one float per image, computed in the engine (the card's OOD gate)
            self._h_ood = mem.host_empty((self._max_b,), trt.nptype(engine.get_tensor_dtype(OOD_OUTPUT)))
            self._d_ood = mem.malloc(self._h_ood.nbytes)
            bindings.append((OOD_OUTPUT, self._d_ood))
        for name, ptr in bindings:
            if not context.set_tensor_address(name, ptr):
                raise ArtefactError(f"{self.path}: set_tensor_address({name!r}) refused")

    def declared_input_shape(self) -> tuple[int | None, ...]:
        return tuple(int(d) for d in self._sample_in)

    def declared_output_width(self) -> int | None:
        return int(self._sample_out[-1]) if self._sample_out else None

    def _infer(self, batch: np.ndarray) -> np.ndarray:
        return self._infer_scored(batch)[0]

    def _infer_scored(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        out, scores = [], []
        for start, n, run in plan_chunks(len(batch), self._min_b, self._max_b):
            out.append(self._run_chunk(batch[start:start + n], run))
            if self._h_ood is not None:
                scores.append(np.array(self._h_ood[:n], dtype=np.float32))  # filled by the same run
        if not out:
            return np.zeros((0, *self._sample_out), np.float32), (
                np.zeros((0,), np.float32) if self._h_ood is not None else None)
        return np.concatenate(out), (np.concatenate(scores) if self._h_ood is not None else None)

    def _run_chunk(self, chunk: np.ndarray, run: int) -> np.ndarray:
        mem, context, h_in, h_out = self._mem, self._context, self._h_in, self._h_out
        assert mem is not None and context is not None and h_in is not None and h_out is not None
        n = len(chunk)
        h_in[:n] = chunk  # casts to the engine's input dtype
        if run > n:
            h_in[n:run] = 0
        if not context.set_input_shape(self._in, (run, *self._sample_in)):
            raise ArtefactError(f"{self.path}: batch {run} is outside the engine's optimisation profile "
                                f"{self.profile} [{self._min_b}, {self._max_b}]")
        per_in = h_in.nbytes // self._max_b
        per_out = h_out.nbytes // self._max_b
        mem.htod_async(self._d_in, h_in, run * per_in, self._stream)
        if not context.execute_async_v3(mem.handle(self._stream)):
            raise CudaError(f"{self.path}: TensorRT execute_async_v3 failed for batch {run}")
        mem.dtoh_async(h_out, self._d_out, run * per_out, self._stream)
        if self._h_ood is not None:
            mem.dtoh_async(self._h_ood, self._d_ood, run * self._h_ood.itemsize, self._stream)
        mem.synchronize(self._stream)
        return np.array(h_out[:n], dtype=np.float32)  # a copy: the pinned buffer is reused

    def synchronize(self) -> None:
        if self.loaded and self._mem is not None:
            self._mem.synchronize(self._stream)

    def describe(self) -> dict[str, Any]:
        d = super().describe()
        if self.loaded and self._mem is not None:
            import tensorrt as trt

            d.update(profile=self.profile, profile_batch=[self._min_b, self._max_b],
                     cuda_binding=self._mem.name, precision=self.card.precision,
                     tensorrt=getattr(trt, "__version__", None))
            if self.notes:
                d["notes"] = self.notes
        return d

    def _close(self) -> None:
        mem = self._mem
        if mem is not None:
            for ptr in (self._d_in, self._d_out, self._d_ood):
                if ptr:
                    mem.free(ptr)
            for arr in (self._h_in, self._h_out, self._h_ood):
                if arr is not None:
                    mem.free_host(arr)
            if self._stream is not None:
                mem.stream_destroy(self._stream)
        self._context = self._engine = self._runtime = None
        self._d_in = self._d_out = self._d_ood = 0
        self._h_in = self._h_out = self._h_ood = self._stream = None


def _dims(dims: trt.Dims) -> tuple[int, ...]:
    return tuple(int(dims[i]) for i in range(len(dims)))
