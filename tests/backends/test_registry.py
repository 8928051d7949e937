"""Backend registry: suffix dispatch, --backend override, cheap constructors, lazy runtimes."""

import subprocess
import sys

import pytest

from bonedeploy.backends import backend_for_path, get_backend, list_backends, open_backend
from bonedeploy.errors import ArtefactError, ConfigError


@pytest.mark.parametrize("name, backend", [
    ("best.pt", "torch"), ("last.PTH", "torch"), ("model.onnx", "onnxruntime"),
    ("model.fp16.onnx", "onnxruntime"), ("model.trt", "tensorrt"), ("m.engine", "tensorrt"),
    ("m.PLAN", "tensorrt"),
])
def test_backend_is_chosen_by_suffix(name, backend):
    assert backend_for_path(name).name == backend


def test_all_three_backends_are_registered():
    assert {"torch", "onnxruntime", "tensorrt"} <= set(list_backends())


def test_backend_option_overrides_the_suffix():
    assert backend_for_path("model.bin", "onnxruntime").name == "onnxruntime"
    assert backend_for_path("model.onnx", "tensorrt").name == "tensorrt"


def test_unknown_suffix_and_unknown_backend_list_the_valid_choices():
    with pytest.raises(ConfigError, match=r"\.onnx.*\.pt|\.pt.*\.onnx"):
        backend_for_path("model.h5")
    with pytest.raises(ConfigError, match="onnxruntime.*tensorrt|tensorrt.*onnxruntime"):
        get_backend("tflite")


def test_constructors_are_cheap_and_load_reports_a_missing_file(tmp_path):
    for name in ("x.pt", "x.onnx", "x.trt"):
        backend = open_backend(tmp_path / name)  # no runtime import, no file access
        assert not backend.loaded
        with pytest.raises(ArtefactError, match="no such file"):
            backend.load()


@pytest.mark.parametrize("name", ["x.pt", "x.onnx", "x.trt"])
def test_unknown_options_are_refused_with_the_valid_ones(name):
    with pytest.raises(ConfigError, match="valid options: .*device"):
        open_backend(name, colour="blue")


def test_card_before_load_is_an_error(tmp_path):
    with pytest.raises(RuntimeError, match="load"):
        _ = open_backend(tmp_path / "x.onnx").card


def test_importing_every_backend_module_imports_no_runtime():
    code = ("import sys; from bonedeploy.backends import list_backends; list_backends(); "
            "bad = [m for m in ('torch', 'tensorrt', 'onnxruntime', 'pycuda') if m in sys.modules]; "
            "print(bad); sys.exit(1 if bad else 0)")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr
