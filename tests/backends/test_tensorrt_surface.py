"""Our TensorRT calls against the real TensorRT 10.13 API (tensorrt-stubs), minus what TensorRT 11
removed. Static (ast) checks of our source and of the checker itself; no TensorRT or GPU needed.
The stand-ins' own surfaces are checked beside them (test_tensorrt_backend.py, export/test_tensorrt.py).
"""

import pytest

from backends import trtstubs


@pytest.fixture(scope="module")
def surface():
    if not trtstubs.stub_files():
        pytest.skip("tensorrt-stubs is not installed (pip install --no-deps tensorrt-stubs)")
    return trtstubs.surface()


@pytest.mark.parametrize("path", trtstubs.OUR_TENSORRT_CODE, ids=lambda p: p.name)
def test_our_code_uses_only_tensorrt_names_that_exist_and_survive_in_11(surface, path):
    refs = trtstubs.trt_references(path.read_text())
    assert refs, f"{path} has no trt.* references: the scan is looking at the wrong thing"
    assert trtstubs.reference_problems(refs, surface) == []


def test_the_reference_check_rejects_invented_and_removed_names(surface):
    code = ("trt.Runtime(trt.Logger(trt.Logger.WARNING))\n"
            "config.set_flag(trt.BuilderFlag.FP16)\n"
            "getattr(trt.NetworkDefinitionCreationFlag, 'EXPLICIT_BATCH', None)\n"
            "trt.Builder.build_engine\n")
    assert trtstubs.reference_problems(trtstubs.trt_references(code), surface) == [
        "trt.Builder.build_engine: not in TensorRT 10.13",
        "trt.BuilderFlag.FP16: removed in TensorRT 11",
        "trt.NetworkDefinitionCreationFlag.EXPLICIT_BATCH: removed in TensorRT 11",
    ]


def test_the_stand_in_check_rejects_what_tensorrt_does_not_have(surface):
    class Context:
        def execute_async_v2(self, bindings, stream_handle):  # removed in TensorRT 10
            return True

        def set_input_shape(self, name):  # TensorRT takes (name, shape)
            return True

        @property
        def set_tensor_address(self):  # a method in TensorRT
            return None

        def debug_state(self):  # stand-in only, never called by our code: not walked
            return {}

    used = {"execute_async_v2", "set_input_shape", "set_tensor_address"}
    assert trtstubs.stand_in_problems({"IExecutionContext": Context, "ICudaEngineX": Context}, used,
                                      surface) == [
        "IExecutionContext.execute_async_v2: not in TensorRT 10.13",
        "IExecutionContext.set_input_shape: takes 1..1 arguments in the stand-in, 2..2 in TensorRT",
        "IExecutionContext.set_tensor_address: a method in TensorRT, a property in the stand-in",
        "ICudaEngineX: no such TensorRT name",
    ]


def test_repair_only_touches_lines_that_do_not_parse_or_misname_types():
    text = ("import typing\nbool: DataType\nclass A:\n"
            "    def f(self, in: list[int], x: int = 1, y: int) -> bool:\n        ...\n"
            "    def g(self, flag: ...) -> ...:\n        ...\n"
            "    def h(self, n: int = 0) -> int:\n        ...\n")
    fixed = trtstubs.repair(text)
    assert "    def f(self, in_: list[int], x: int, y: int) -> builtins.bool:" in fixed
    assert "    def g(self, flag: typing.Any) -> typing.Any:" in fixed
    assert "    def h(self, n: int = 0) -> int:" in fixed and "\nbool: DataType\n" in fixed
    compile(fixed, "stub", "exec")
