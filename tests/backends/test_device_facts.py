"""Facts about TensorRT, CUDA and the GPU of this process. The stand-ins for cuda-python test our
parsing of its results only; the last CUDA test uses the real cuda-python where it is installed."""

import sys
import types

import pytest

from bonedeploy.backends import device_facts as df
from bonedeploy.errors import BackendUnavailableError


def test_runtime_facts_without_tensorrt_is_backend_unavailable(monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorrt", None)  # import fails as when not installed
    with pytest.raises(BackendUnavailableError, match="TensorRT is not installed"):
        df.runtime_facts()


def test_a_tensorrt_namespace_without_bindings_is_not_installed_tensorrt(monkeypatch):
    """What ``pip install tensorrt-stubs`` alone leaves: a ``tensorrt`` package of .pyi files."""
    stub_only = types.ModuleType("tensorrt")
    stub_only.__path__ = ["/venv/site-packages/tensorrt"]
    monkeypatch.setitem(sys.modules, "tensorrt", stub_only)
    with pytest.raises(BackendUnavailableError, match="not installed here: `import tensorrt` finds /venv/site-packages/tensorrt"):
        df.runtime_facts()
    with pytest.raises(BackendUnavailableError, match="; run it elsewhere$"):
        df.require_tensorrt("run it elsewhere")


def fake_cudart(err_on=None):
    """A stand-in for cuda-python's ``cuda.bindings.runtime``: tests our parsing, not CUDA."""
    ok, bad = types.SimpleNamespace(name="cudaSuccess"), types.SimpleNamespace(name="cudaErrorNoDevice")
    rt = types.ModuleType("cuda.bindings.runtime")
    rt.cudaError_t = types.SimpleNamespace(cudaSuccess=ok)

    def call(name, value):
        return lambda *a: ((bad, None) if err_on == name else (ok, value))

    rt.cudaGetErrorString = lambda err: (ok, b"no CUDA-capable device is detected")
    rt.cudaGetDeviceCount = call("count", 1)
    rt.cudaGetDeviceProperties = call("props", types.SimpleNamespace(name=b"NVIDIA H100 PCIe\x00\x00", major=9, minor=0))
    rt.cudaRuntimeGetVersion = call("rt", 12060)
    rt.cudaDriverGetVersion = call("drv", 12080)
    return rt


def install_cuda(monkeypatch, rt):
    cuda, bindings = types.ModuleType("cuda"), types.ModuleType("cuda.bindings")
    cuda.bindings, bindings.runtime = bindings, rt
    monkeypatch.setitem(sys.modules, "cuda", cuda)
    monkeypatch.setitem(sys.modules, "cuda.bindings", bindings)
    monkeypatch.setitem(sys.modules, "cuda.bindings.runtime", rt)
    monkeypatch.setattr("bonedeploy.util.machine.gpu_info", lambda: {"driver": "560.35.03"})


def test_cuda_facts_parses_cuda_python_results(monkeypatch):
    install_cuda(monkeypatch, fake_cudart())
    assert df.cuda_facts() == {"gpu_name": "NVIDIA H100 PCIe", "compute_capability": "9.0",
                               "cuda_runtime": "12.6", "cuda_driver_api": "12.8", "driver": "560.35.03"}


@pytest.mark.parametrize("err_on, call", [("count", "cudaGetDeviceCount"), ("props", "cudaGetDeviceProperties"),
                                           ("rt", "cudaRuntimeGetVersion")])
def test_cuda_errors_become_backend_unavailable(monkeypatch, err_on, call):
    install_cuda(monkeypatch, fake_cudart(err_on=err_on))
    with pytest.raises(BackendUnavailableError, match=rf"{call} failed: cudaErrorNoDevice \(no CUDA-capable"):
        df.cuda_facts()


def test_real_cuda_python_without_a_gpu_is_backend_unavailable_naming_the_cause():
    """The real cuda-python (no stand-in), on a machine without a usable driver or GPU."""
    try:
        from cuda.bindings import runtime as rt
    except ImportError:
        pytest.skip("cuda-python is not installed here")
    err, count = rt.cudaGetDeviceCount()
    if err == rt.cudaError_t.cudaSuccess and count > 0:
        pytest.skip("this machine has a CUDA GPU")
    with pytest.raises(BackendUnavailableError, match=f"cudaGetDeviceCount failed: {err.name}"):
        df.cuda_facts()


def test_without_cuda_python_nvidia_smi_still_identifies_the_gpu(monkeypatch):
    monkeypatch.setitem(sys.modules, "cuda", None)
    monkeypatch.setitem(sys.modules, "cuda.bindings", None)
    monkeypatch.setattr("bonedeploy.util.machine.gpu_info", lambda: {
        "name": "Orin", "driver": "540.3", "compute_capability": "8.7", "memory": "?", "count": 1})
    facts = df.cuda_facts()
    assert (facts["gpu_name"], facts["compute_capability"], facts["driver"]) == ("Orin", "8.7", "540.3")
    monkeypatch.setattr("bonedeploy.util.machine.gpu_info", lambda: None)
    with pytest.raises(BackendUnavailableError, match="cuda-python .* is not installed .* nvidia-smi finds no GPU"):
        df.cuda_facts()
