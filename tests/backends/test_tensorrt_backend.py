"""TensorRT backend.

This machine has neither TensorRT nor a GPU. The first part uses stand-ins for ``tensorrt`` and
``cuda.bindings.runtime`` that follow their documented call signatures: it tests OUR glue (sidecar
first, batch splitting/padding within the profile, profile selection, buffer binding, copy sizes,
error-code checks, cleanup), not TensorRT. The stand-in's surface is checked against tensorrt-stubs
(the real 10.13 API). The no-driver path runs against the real cuda-python where it is installed.
The tests marked ``tensorrt`` build and run a real engine and are skipped where TensorRT or a GPU
is missing.
"""

import ctypes
import enum
import sys
import types

import numpy as np
import pytest

from bonedeploy.backends import cudamem, device_facts
from bonedeploy.backends.tensorrt import TensorRTBackend, plan_chunks
from bonedeploy.errors import ArtefactError, BackendUnavailableError, ConfigError, IncompatibleEngineError
from bonedeploy.artefacts import sidecar as sc
from onnxkit import tiny_card, tiny_logits, tiny_onnx_classifier

FACTS = {"tensorrt": "10.13.0", "gpu_name": "NVIDIA H100 80GB HBM3", "compute_capability": "9.0",
         "cuda_runtime": "12.9", "driver": "575.57"}


# ---------------------------------------------------------------------------- stand-ins
class Err(enum.IntEnum):
    cudaSuccess = 0
    cudaErrorMemoryAllocation = 2
    cudaErrorInsufficientDriver = 35


class FakeStream:
    """Like cuda-python's cudaStream_t: int() gives the handle TensorRT takes."""

    def __int__(self):
        return 4242


class FakeCudart(types.ModuleType):
    """Device memory = bytearrays keyed by fake pointers; host memory = real ctypes buffers."""

    cudaError_t = Err
    cudaMemcpyKind = types.SimpleNamespace(cudaMemcpyHostToDevice=1, cudaMemcpyDeviceToHost=2)

    def __init__(self):
        super().__init__("cuda.bindings.runtime")
        self.device, self.host, self.streams, self.log = {}, {}, set(), []
        self.fail_malloc = False
        self.device_error = Err.cudaSuccess
        self._next = 0x10000

    def cudaGetErrorString(self, err):
        return Err.cudaSuccess, {Err.cudaErrorMemoryAllocation: b"out of memory"}.get(err, b"?")

    def cudaGetDeviceCount(self):
        self.log.append(("cudaGetDeviceCount",))
        return self.device_error, (0 if self.device_error else 1)

    def cudaMalloc(self, n):
        self.log.append(("cudaMalloc", n))
        if self.fail_malloc:
            return Err.cudaErrorMemoryAllocation, None
        self._next += 0x10000
        self.device[self._next] = bytearray(n)
        return Err.cudaSuccess, self._next

    def cudaFree(self, ptr):
        del self.device[ptr]
        return (Err.cudaSuccess,)

    def cudaMallocHost(self, n):
        buf = ctypes.create_string_buffer(n)
        self.host[ctypes.addressof(buf)] = buf
        self.log.append(("cudaMallocHost", n))
        return Err.cudaSuccess, ctypes.addressof(buf)

    def cudaFreeHost(self, ptr):
        del self.host[ptr]
        return (Err.cudaSuccess,)

    def cudaStreamCreate(self):
        self.streams.add(4242)
        return Err.cudaSuccess, FakeStream()

    def cudaStreamSynchronize(self, stream):
        self.log.append(("sync", int(stream)))
        return (Err.cudaSuccess,)

    def cudaStreamDestroy(self, stream):
        self.streams.discard(int(stream))
        return (Err.cudaSuccess,)

    def cudaMemcpyAsync(self, dst, src, count, kind, stream):
        self.log.append(("memcpy", kind, count))
        if kind == 1:
            self.device[dst][:count] = ctypes.string_at(src, count)
        else:
            ctypes.memmove(dst, bytes(self.device[src][:count]), count)
        return (Err.cudaSuccess,)


class FakeContext:
    """Like TensorRT, runs profile 0 until another is selected, and refuses shapes outside it."""

    def __init__(self, engine):
        self.engine, self.addresses, self.shapes, self.profiles = engine, {}, [], []
        self.profile = 0

    def set_optimization_profile_async(self, profile_index, stream_handle):
        assert isinstance(stream_handle, int)
        self.profiles.append(profile_index)
        self.profile = profile_index
        return True

    def set_input_shape(self, name, shape):
        self.shapes.append(tuple(shape))
        self.shape = tuple(shape)
        lo, hi = self.engine.PROFILES[self.profile]
        return lo <= shape[0] <= hi

    def set_tensor_address(self, name, ptr):
        self.addresses[name] = ptr
        return True

    def execute_async_v3(self, stream_handle):
        assert isinstance(stream_handle, int)
        mem = self.engine.cudart.device
        n = self.shape[0]
        x = np.frombuffer(bytes(mem[self.addresses["input"]][: n * 4 * 32 * 32]), np.float32)
        y = tiny_logits(x.reshape(n, 1, 32, 32))
        mem[self.addresses["logits"]][: y.nbytes] = y.tobytes()
        return True


class FakeEngine:
    """Two optimisation profiles: batch [2, 4] (profile 0) and [1, 8] (profile 1)."""

    num_io_tensors = 2
    num_optimization_profiles = 2
    PROFILES = ((2, 4), (1, 8))

    def __init__(self, cudart):
        self.cudart = cudart

    def get_tensor_name(self, i):
        return ["input", "logits"][i]

    def get_tensor_mode(self, name):
        return "IN" if name == "input" else "OUT"

    def get_tensor_dtype(self, name):
        return np.float32

    def get_tensor_shape(self, name):
        return (-1, 1, 32, 32) if name == "input" else (-1, 2)

    def get_tensor_profile_shape(self, name, profile_index):
        lo, hi = self.PROFILES[profile_index]
        return [(b, 1, 32, 32) for b in (lo, hi, hi)]

    def create_execution_context(self):
        self.context = FakeContext(self)
        return self.context


def fake_tensorrt(cudart, engine_ok=True):
    trt = types.ModuleType("tensorrt")
    trt.__version__ = FACTS["tensorrt"]
    trt.calls = []
    trt.Logger = type("Logger", (), {"WARNING": 2, "__init__": lambda self, level: None})
    trt.TensorIOMode = types.SimpleNamespace(INPUT="IN", OUTPUT="OUT")
    trt.nptype = lambda dt: dt

    class Runtime:
        def __init__(self, logger):
            pass

        def deserialize_cuda_engine(self, data):
            trt.calls.append("deserialize")
            trt.engine = FakeEngine(cudart) if engine_ok else None
            return trt.engine

    trt.Runtime = Runtime
    return trt


def install_fakes(monkeypatch, make_engine=None):
    """The stand-ins in sys.modules; ``make_engine(cudart)``: the engine the runtime deserialises."""
    cudart = FakeCudart()
    bindings = types.ModuleType("cuda.bindings")
    bindings.runtime = cudart
    monkeypatch.setitem(sys.modules, "cuda.bindings", bindings)
    monkeypatch.setitem(sys.modules, "cuda.bindings.runtime", cudart)
    trt = fake_tensorrt(cudart)
    if make_engine is not None:
        class Runtime(trt.Runtime):
            def deserialize_cuda_engine(self, data):
                trt.engine = make_engine(cudart)
                return trt.engine

        trt.Runtime = Runtime
    monkeypatch.setitem(sys.modules, "tensorrt", trt)
    monkeypatch.setattr(device_facts, "runtime_facts", lambda: dict(FACTS))
    return types.SimpleNamespace(cudart=cudart, trt=trt)


@pytest.fixture
def fakes(monkeypatch):
    return install_fakes(monkeypatch)


@pytest.fixture
def engine(tmp_path):
    path = tmp_path / "model.trt"
    path.write_bytes(b"serialized engine")
    sc.write_sidecar(path, sc.build_sidecar(FACTS, tiny_card(), {"min": 2, "opt": 4, "max": 4},
                                            "model.onnx", "0" * 64, "2025-01-01T00:00:00+00:00"))
    return path


def images(n):
    return np.random.default_rng(n).random((n, 1, 32, 32), dtype=np.float32)


# ---------------------------------------------------------------------------- glue tests
def test_the_runtime_stand_in_offers_only_what_tensorrt_has():
    """Every stand-in member the backend uses exists in TensorRT 10.13 (tensorrt-stubs), is not
    removed in 11, and has TensorRT's kind and arity: a call TensorRT lacks fails here."""
    from pathlib import Path

    from backends import trtstubs
    from bonedeploy.backends import tensorrt as backend_module

    if not trtstubs.stub_files():
        pytest.skip("tensorrt-stubs is not installed (pip install --no-deps tensorrt-stubs)")
    trt = fake_tensorrt(FakeCudart())
    stand_ins = {"": trt, "Logger": trt.Logger, "TensorIOMode": trt.TensorIOMode, "Runtime": trt.Runtime,
                 "ICudaEngine": FakeEngine, "IExecutionContext": FakeContext}
    used = trtstubs.attribute_names(Path(backend_module.__file__).read_text())
    assert {"set_optimization_profile_async", "execute_async_v3", "get_tensor_profile_shape"} <= used
    assert trtstubs.stand_in_problems(stand_ins, used, trtstubs.surface()) == []


@pytest.mark.parametrize("n, lo, hi, chunks", [
    (9, 2, 4, [(0, 4, 4), (4, 4, 4), (8, 1, 2)]),
    (3, 1, 8, [(0, 3, 3)]),
    (1, 4, 4, [(0, 1, 4)]),
    (0, 1, 4, []),
])
def test_plan_chunks_stays_within_the_profile(n, lo, hi, chunks):
    assert plan_chunks(n, lo, hi) == chunks


def test_runs_split_and_padded_batches_through_pinned_buffers(fakes, engine):
    x = images(9)
    with TensorRTBackend(engine) as b:
        assert b.card == tiny_card()
        out = b.infer(x)
        assert b.describe()["profile_batch"] == [2, 4] and b.describe()["cuda_binding"] == "cuda-python"
        ctx = fakes.trt.engine.context
    np.testing.assert_allclose(out, tiny_logits(x), atol=1e-6)
    assert ctx.shapes == [(4, 1, 32, 32), (4, 1, 32, 32), (2, 1, 32, 32)]  # 9 = 4 + 4 + 1 padded to 2
    per_image = 4 * 32 * 32
    h2d = [c for kind, c in ((e[1], e[2]) for e in fakes.cudart.log if e[0] == "memcpy") if kind == 1]
    assert h2d == [4 * per_image, 4 * per_image, 2 * per_image]
    assert [e for e in fakes.cudart.log if e[0] == "cudaMallocHost"] == [
        ("cudaMallocHost", 4 * per_image), ("cudaMallocHost", 4 * 2 * 4)]
    # close() released every buffer and the stream
    assert not fakes.cudart.device and not fakes.cudart.host and not fakes.cudart.streams


def test_incompatible_sidecar_is_refused_before_deserialising(fakes, engine, monkeypatch):
    monkeypatch.setattr(device_facts, "runtime_facts", lambda: {**FACTS, "gpu_name": "Orin", "compute_capability": "8.7"})
    with pytest.raises(IncompatibleEngineError, match="GPU NVIDIA H100 80GB HBM3 at build, Orin here.*rebuild"):
        TensorRTBackend(engine).load()
    assert fakes.trt.calls == [] and not fakes.cudart.log


def test_missing_sidecar_is_reported_first_even_without_tensorrt(tmp_path):
    path = tmp_path / "model.engine"
    path.write_bytes(b"x")
    with pytest.raises(ArtefactError, match=r"model\.engine\.json: missing.*rebuild"):
        TensorRTBackend(path).load()


def test_engine_that_does_not_deserialise_says_rebuild(fakes, engine, monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorrt", fake_tensorrt(fakes.cudart, engine_ok=False))
    with pytest.raises(ArtefactError, match="could not deserialise.*rebuild it on this machine"):
        TensorRTBackend(engine).load()


def test_cuda_error_codes_become_errors_naming_the_call_and_nothing_leaks(fakes, engine):
    fakes.cudart.fail_malloc = True
    with pytest.raises(cudamem.CudaError, match="cudaMalloc failed: cudaErrorMemoryAllocation"):
        TensorRTBackend(engine).load()
    assert not fakes.cudart.host and not fakes.cudart.streams


def _real_tensorrt_installed():
    try:
        import tensorrt
    except ImportError:
        return False
    return isinstance(getattr(tensorrt, "__version__", None), str)  # not a stubs-only namespace


@pytest.mark.skipif(_real_tensorrt_installed(), reason="checks the error where TensorRT is absent")
def test_without_tensorrt_the_error_says_what_to_do(engine, monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorrt", None)  # import fails as when not installed
    with pytest.raises(BackendUnavailableError, match="TensorRT is not installed.*needs TensorRT.*onnxruntime"):
        TensorRTBackend(engine).load()


def test_a_stubs_only_tensorrt_is_not_installed_tensorrt(engine, monkeypatch):
    """``pip install tensorrt-stubs`` leaves a ``tensorrt/`` folder of .pyi files that imports as
    an empty namespace package; that must read "not installed", not an AttributeError later."""
    stub_only = types.ModuleType("tensorrt")
    stub_only.__path__ = ["/site-packages/tensorrt"]
    monkeypatch.setitem(sys.modules, "tensorrt", stub_only)
    with pytest.raises(BackendUnavailableError, match=r"not installed.*/site-packages/tensorrt.*tensorrt-stubs"):
        TensorRTBackend(engine).load()


def test_profile_option_selects_that_profile_on_the_context(fakes, engine):
    """Glue test with the stand-in: profile=1's limits are read AND the context is switched to it
    (set_optimization_profile_async), so a batch of 8, outside profile 0, runs unsplit."""
    x = images(8)
    with TensorRTBackend(engine, profile=1) as b:
        out = b.infer(x)
        assert b.describe()["profile_batch"] == [1, 8] and b.describe()["profile"] == 1
        ctx = fakes.trt.engine.context
    assert ctx.profiles == [1] and ctx.shapes == [(8, 1, 32, 32)]
    np.testing.assert_allclose(out, tiny_logits(x), atol=1e-6)
    with TensorRTBackend(engine) as b:  # the default is profile 0, selected explicitly too
        b.infer(x)
    assert fakes.trt.engine.context.profiles == [0]


@pytest.mark.parametrize("profile, match", [
    (2, r"profile 2 does not exist in model\.trt; valid profiles: 0\.\.1"),
    (-1, r"tensorrt backend: profile -1; expected an integer >= 0"),
    ("first", r"tensorrt backend: profile 'first'; expected an integer >= 0"),
])
def test_an_invalid_profile_lists_the_valid_range(fakes, engine, profile, match):
    with pytest.raises(ConfigError, match=match):
        TensorRTBackend(engine, profile=profile).load()
    assert not fakes.cudart.device and not fakes.cudart.host and not fakes.cudart.streams


def test_no_cuda_driver_is_backend_unavailable_naming_cudas_reason(fakes, engine):
    """Stand-in for the driver's answer: the error code is checked before the count is used."""
    fakes.cudart.device_error = Err.cudaErrorInsufficientDriver
    with pytest.raises(BackendUnavailableError, match="cudaGetDeviceCount failed: cudaErrorInsufficientDriver"):
        TensorRTBackend(engine).load()
    assert fakes.trt.calls == [] and not fakes.cudart.device and not fakes.cudart.streams


def _real_cuda_python_without_a_gpu():
    try:
        from cuda.bindings import runtime as rt
    except ImportError:
        pytest.skip("cuda-python is not installed here")
    err, count = rt.cudaGetDeviceCount()
    if err == rt.cudaError_t.cudaSuccess and count > 0:
        pytest.skip("this machine has a CUDA GPU: the no-device path cannot be reached")
    return err


def test_real_cuda_python_without_a_driver_names_the_cause():
    """The real cuda-python on a machine without a usable driver/GPU (here: cudaGetDeviceCount
    returns cudaErrorInsufficientDriver): a clear BackendUnavailableError, not a tuple error."""
    err = _real_cuda_python_without_a_gpu()
    with pytest.raises(BackendUnavailableError, match=rf"cudaGetDeviceCount failed: {err.name} \(") as info:
        cudamem.open_cuda("cuda-python")
    assert "no usable CUDA device" in str(info.value)
    with pytest.raises(BackendUnavailableError, match=rf"cuda-python: .*{err.name}.*pycuda"):
        cudamem.open_cuda()  # auto: both bindings' reasons


def test_real_cuda_python_stops_the_backend_load_with_that_cause(engine, monkeypatch):
    """TensorRT is a stand-in here (glue), CUDA is the real cuda-python: load() gets as far as
    asking CUDA for the GPU and stops with CUDA's reason, before any engine is deserialised."""
    err = _real_cuda_python_without_a_gpu()
    trt = fake_tensorrt(None)
    monkeypatch.setitem(sys.modules, "tensorrt", trt)
    with pytest.raises(BackendUnavailableError, match=rf"cudaGetDeviceCount failed: {err.name}"):
        TensorRTBackend(engine).load()
    assert trt.calls == []


def test_falls_back_to_pycuda_when_cuda_python_is_missing(monkeypatch):
    for name in ("cuda.bindings", "cuda.bindings.runtime", "cuda.cudart"):
        monkeypatch.setitem(sys.modules, name, None)  # None in sys.modules makes the import fail
    drv = types.ModuleType("pycuda.driver")
    drv.Error = RuntimeError
    pycuda = types.ModuleType("pycuda")
    pycuda.driver = drv
    for name, mod in (("pycuda", pycuda), ("pycuda.driver", drv), ("pycuda.autoinit", types.ModuleType("a"))):
        monkeypatch.setitem(sys.modules, name, mod)
    assert cudamem.open_cuda().name == "pycuda"
    monkeypatch.setitem(sys.modules, "pycuda.autoinit", None)
    with pytest.raises(BackendUnavailableError, match="cuda-python.*pycuda"):
        cudamem.open_cuda()


def test_cpu_device_is_refused():
    with pytest.raises(Exception, match="CUDA only.*valid: auto, cuda"):
        TensorRTBackend("m.trt", device="cpu")


# ---------------------------------------------------------------------------- real TensorRT
def _real_tensorrt_or_skip():
    from bonedeploy.export.tensorrt import tensorrt_available

    ok, why = tensorrt_available()
    if not ok:
        pytest.skip(f"needs TensorRT and a CUDA GPU: {why}")


@pytest.mark.tensorrt
def test_real_engine_matches_onnxruntime_for_every_batch_size(tmp_path):
    _real_tensorrt_or_skip()
    from bonedeploy.backends.onnxrt import OnnxRuntimeBackend
    from bonedeploy.export.tensorrt import BatchProfile, build_engine

    onnx_path = tiny_onnx_classifier(tmp_path / "model.onnx")
    engine_path = tmp_path / "model.trt"
    build_engine(onnx_path, engine_path, tiny_card(), BatchProfile(2, 4, 8), use_timing_cache=False,
                 log=lambda *a: None)
    x = images(19)
    with OnnxRuntimeBackend(onnx_path) as ref, TensorRTBackend(engine_path) as trt_b:
        for n in (1, 2, 8, 19):
            np.testing.assert_allclose(trt_b.infer(x[:n]), ref.infer(x[:n]), atol=1e-4)
