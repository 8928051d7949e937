"""TensorRT engine building.

(a) engine-independent logic: batch profile arithmetic and validation, timing-cache naming, flags;
(b) our builder code run against a stand-in ``tensorrt`` module exposing only the TensorRT 11
    Python surface: this checks OUR calls (no removed API is touched), not TensorRT itself; the
    stand-in's own surface is checked against tensorrt-stubs (the real TensorRT 10.13 API);
(c) real build-and-run tests, marked ``tensorrt``, skipped unless TensorRT and a GPU are present.
"""

import functools
import importlib.machinery
import json
import sys
import types
from pathlib import Path

import numpy as np
import pytest

from exportkit import make_checkpoint, make_tree  # noqa: E402

from bonedeploy.artefacts.card import ModelCard  # noqa: E402
from bonedeploy.errors import ArtefactError, BackendUnavailableError, ConfigError  # noqa: E402
from bonedeploy.export import tensorrt as bt  # noqa: E402
from bonedeploy.data.preprocess import PreprocessSpec  # noqa: E402

FACTS = {"tensorrt": "11.0.0", "gpu_name": "NVIDIA H100 80GB HBM3", "compute_capability": "9.0",
         "cuda_runtime": "13.0", "cuda_driver_api": "13.0", "driver": "580.1"}


# --- (a) engine-independent logic ----------------------------------------------------------------
def test_batch_profile_parse_and_shapes():
    p = bt.BatchProfile.parse("1, 8, 32")
    assert (p.min, p.opt, p.max) == (1, 8, 32) and p == bt.BatchProfile()
    assert p.shapes((1, 400, 400)) == ((1, 1, 400, 400), (8, 1, 400, 400), (32, 1, 400, 400))
    assert bt.BatchProfile.parse("4") == bt.BatchProfile(4, 4, 4)
    assert p.to_dict() == {"min": 1, "opt": 8, "max": 32}


@pytest.mark.parametrize("text", ["8,1,32", "0,1,2", "1,64,32", "1,2,5000", "a,b,c", "1,2", "1,2,3,4", ""])
def test_batch_profile_rejects_bad_values_with_the_rule(text):
    with pytest.raises(ConfigError, match=r"MIN,OPT,MAX|1 <= MIN <= OPT <= MAX"):
        bt.BatchProfile.parse(text)


def test_timing_cache_is_keyed_by_gpu_and_tensorrt_version():
    name = bt.timing_cache_name("NVIDIA H100 80GB HBM3", "9.0", "10.3.0.26")
    assert name == "nvidia-h100-80gb-hbm3-sm90-trt10.3.0.26.cache"
    assert bt.timing_cache_name("Orin (nvgpu)", "8.7", "10.3.0") == "orin-nvgpu-sm87-trt10.3.0.cache"
    assert name != bt.timing_cache_name("NVIDIA H100 80GB HBM3", "9.0", "11.0.0")
    assert name != bt.timing_cache_name("NVIDIA A100-SXM4-40GB", "8.0", "10.3.0.26")


def test_network_flags_set_strongly_typed_only_where_it_exists():
    ten = types.SimpleNamespace(NetworkDefinitionCreationFlag=types.SimpleNamespace(EXPLICIT_BATCH=0, STRONGLY_TYPED=1))
    eleven = types.SimpleNamespace(NetworkDefinitionCreationFlag=types.SimpleNamespace(STRONGLY_TYPED=0))
    later = types.SimpleNamespace(NetworkDefinitionCreationFlag=types.SimpleNamespace(PREFER_AOT_PYTHON_PLUGINS=1))
    assert (bt.network_flags(ten), bt.network_flags(eleven), bt.network_flags(later)) == (2, 1, 0)


# --- (b) the TensorRT 11 stand-in ------------------------------------------------------------------
def fake_tensorrt11(calls, parse_errors=(), build_ok=True, build_log=()):
    """A module with ONLY TensorRT 11's Python names for what a builder touches: no BuilderFlag.FP16
    /INT8, no EXPLICIT_BATCH, no calibrators or int8_calibrator. Objects use __slots__, so setting
    a removed attribute (config.int8_calibrator = ...) fails too. It records every call."""
    trt = types.ModuleType("tensorrt")
    trt.__version__ = "11.0.0"
    # torch.export walks sys.modules and needs a spec on every module it finds there.
    trt.__spec__ = importlib.machinery.ModuleSpec("tensorrt", None, origin=__file__)

    def rec(name):
        def deco(fn):
            @functools.wraps(fn)  # the surface check reads the real signature
            def wrapper(*a, **k):
                calls.append((name, a[1:], k))  # a[0] is self
                return fn(*a, **k)
            return wrapper
        return deco

    class ILogger:
        class Severity:
            INTERNAL_ERROR, ERROR, WARNING, INFO, VERBOSE = range(5)

        INTERNAL_ERROR, ERROR, WARNING, INFO, VERBOSE = range(5)

        def log(self, severity, msg):
            pass

    class Logger(ILogger):
        __slots__ = ("min_severity",)

        def __init__(self, min_severity=2):
            self.min_severity = min_severity

    class Dims(tuple):
        pass

    class ErrorCode:
        UNSUPPORTED_NODE = types.SimpleNamespace(name="UNSUPPORTED_NODE")

    class NetworkDefinitionCreationFlag:  # 11.0: STRONGLY_TYPED kept (ignored), EXPLICIT_BATCH gone
        STRONGLY_TYPED, PREFER_AOT_PYTHON_PLUGINS, PREFER_JIT_PYTHON_PLUGINS = 0, 1, 2

    class BuilderFlag:  # 11.x: no FP16, INT8, BF16, FP8, INT4, FP4, OBEY/PREFER_PRECISION_CONSTRAINTS, DIRECT_IO
        DEBUG, GPU_FALLBACK, REFIT, DISABLE_TIMING_CACHE, EDITABLE_TIMING_CACHE, SPARSE_WEIGHTS = range(6)

    class MemoryPoolType:
        WORKSPACE, DLA_MANAGED_SRAM, DLA_LOCAL_DRAM, DLA_GLOBAL_DRAM, TACTIC_DRAM = range(5)

    class ITensor:
        __slots__ = ("_name", "_shape")

        def __init__(self, name, shape):
            self._name, self._shape = name, shape

        @property
        def name(self):
            return self._name

        @property
        def shape(self):
            return self._shape

    class INetworkDefinition:
        __slots__ = ("flags", "inputs")

        def __init__(self, flags):
            self.flags, self.inputs = flags, []

        @property
        def num_inputs(self):
            return len(self.inputs)

        def get_input(self, i):
            return self.inputs[i]

    class ParserError:
        __slots__ = ("_desc", "_node", "_op")

        def __init__(self, desc, node, op):
            self._desc, self._node, self._op = desc, node, op

        def desc(self):
            return self._desc

        def node(self):
            return self._node

        def node_name(self):
            return f"{self._op}_{self._node}"

        def node_operator(self):
            return self._op

        def code(self):
            return ErrorCode.UNSUPPORTED_NODE

    class OnnxParser:
        __slots__ = ("network", "errors")

        def __init__(self, network, logger):
            self.network, self.errors = network, []

        @rec("parse_from_file")
        def parse_from_file(self, path):
            import onnx

            if parse_errors:
                self.errors = [ParserError(*e) for e in parse_errors]
                return False
            inp = onnx.load(path, load_external_data=False).graph.input[0]
            dims = [d.dim_value or -1 for d in inp.type.tensor_type.shape.dim]
            self.network.inputs.append(ITensor(inp.name, tuple(dims)))
            return True

        @property
        def num_errors(self):
            return len(self.errors)

        def get_error(self, i):
            return self.errors[i]

    class ITimingCache:
        __slots__ = ("blob",)

        def __init__(self, blob):
            self.blob = bytes(blob) + b"+timings"

        def serialize(self):
            return self.blob

    class IOptimizationProfile:
        __slots__ = ("shapes",)

        def __init__(self):
            self.shapes = {}

        @rec("set_shape")
        def set_shape(self, name, mn, opt, mx):
            self.shapes[name] = (mn, opt, mx)

    class IBuilderConfig:
        __slots__ = ("pools", "profiles", "cache", "flags")

        def __init__(self):
            self.pools, self.profiles, self.cache, self.flags = {}, [], None, set()

        @rec("set_memory_pool_limit")
        def set_memory_pool_limit(self, pool, size):
            self.pools[pool] = size

        @rec("add_optimization_profile")
        def add_optimization_profile(self, profile):
            self.profiles.append(profile)
            return len(self.profiles) - 1

        @rec("create_timing_cache")
        def create_timing_cache(self, blob):
            return ITimingCache(blob)

        @rec("set_timing_cache")
        def set_timing_cache(self, cache, ignore_mismatch):
            self.cache = cache
            return True

        def get_timing_cache(self):
            return self.cache

        def set_flag(self, flag):
            self.flags.add(flag)

    class Builder:
        __slots__ = ("logger",)

        def __init__(self, logger):
            self.logger = logger

        @rec("create_network")
        def create_network(self, flags=0):
            return INetworkDefinition(flags)

        def create_builder_config(self):
            return IBuilderConfig()

        def create_optimization_profile(self):
            return IOptimizationProfile()

        @rec("build_serialized_network")
        def build_serialized_network(self, network, config):
            for msg in build_log:
                self.logger.log(ILogger.Severity.ERROR, msg)
            return b"ENGINE:" + network.inputs[0].name.encode() if build_ok else None

    for obj in (ILogger, Logger, Dims, ErrorCode, NetworkDefinitionCreationFlag, BuilderFlag, MemoryPoolType,
                ITensor, INetworkDefinition, ParserError, OnnxParser, ITimingCache, IOptimizationProfile,
                IBuilderConfig, Builder):
        setattr(trt, obj.__name__, obj)
    return trt


@pytest.fixture
def trt11(monkeypatch):
    calls = []
    monkeypatch.setitem(sys.modules, "tensorrt", fake_tensorrt11(calls))
    monkeypatch.setattr("bonedeploy.backends.device_facts.cuda_facts", lambda device=0: {
        k: v for k, v in FACTS.items() if k != "tensorrt"})
    return calls


@pytest.fixture(scope="module")
def tiny_onnx(tmp_path_factory):
    pytest.importorskip("onnx")
    from onnxkit import tiny_onnx_classifier

    card = ModelCard(model="tiny", precision="fp16", preprocess=PreprocessSpec(crop_size=32))
    return tiny_onnx_classifier(tmp_path_factory.mktemp("onnx") / "model.fp16.onnx", card=card), card


def test_builder_uses_only_tensorrt11_api_and_writes_engine_sidecar_and_cache(trt11, tiny_onnx, tmp_path):
    """Checks our calls against the TensorRT 11 surface, not TensorRT: a removed name would raise."""
    onnx_path, card = tiny_onnx
    res = bt.build_engine(onnx_path, tmp_path / "model.trt", card, bt.BatchProfile(1, 4, 16),
                          workspace_mb=512, cache_dir=tmp_path / "cache", log=lambda m: None)
    names = [c[0] for c in trt11]
    assert names == ["create_network", "parse_from_file", "set_memory_pool_limit", "set_shape",
                     "add_optimization_profile", "create_timing_cache", "set_timing_cache",
                     "build_serialized_network"]
    call = dict((c[0], c[1]) for c in trt11)
    assert call["create_network"] == (1,)  # 1 << STRONGLY_TYPED (0 in TensorRT 11)
    assert call["set_memory_pool_limit"] == (0, 512 << 20)
    assert call["set_shape"] == ("input", (1, 1, 32, 32), (4, 1, 32, 32), (16, 1, 32, 32))
    assert res.engine.read_bytes() == b"ENGINE:input"
    side = json.loads((tmp_path / "model.trt.json").read_text())
    assert side["tensorrt"] == "11.0.0" and side["gpu_name"] == FACTS["gpu_name"]
    assert side["precision"] == "fp16" and side["profile"]["max"] == 16 and side["onnx"]["file"] == "model.fp16.onnx"
    assert res.timing_cache == tmp_path / "cache" / "nvidia-h100-80gb-hbm3-sm90-trt11.0.0.cache"
    assert res.timing_cache.read_bytes() == b"+timings"
    # A second build starts from the persisted cache.
    trt11.clear()
    bt.build_engine(onnx_path, tmp_path / "model.trt", card, bt.BatchProfile(), cache_dir=tmp_path / "cache",
                    log=lambda m: None)
    assert dict((c[0], c[1]) for c in trt11)["create_timing_cache"] == (b"+timings",)


@pytest.mark.parametrize("env", ["off", "dir"])
def test_the_default_timing_cache_follows_the_cache_root_and_off(trt11, tiny_onnx, tmp_path, monkeypatch, env):
    """No --timing-cache DIR: the cache goes under the one cache root, and nowhere with
    BONEDEPLOY_CACHE_DIR=off (no timing cache is read or written then)."""
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    monkeypatch.setenv("BONEDEPLOY_CACHE_DIR", "off" if env == "off" else str(tmp_path / "root"))
    onnx_path, card = tiny_onnx
    res = bt.build_engine(onnx_path, tmp_path / "model.trt", card, bt.BatchProfile(1, 4, 16), log=lambda m: None)
    names = [c[0] for c in trt11]
    if env == "off":
        assert res.timing_cache is None and "create_timing_cache" not in names
        assert sorted(p.name for p in tmp_path.iterdir()) == ["model.trt", "model.trt.json"]
    else:
        assert res.timing_cache == tmp_path / "root" / "tensorrt-timing" / "nvidia-h100-80gb-hbm3-sm90-trt11.0.0.cache"
        assert res.timing_cache.read_bytes() == b"+timings"


def test_an_explicit_timing_cache_dir_wins_over_off(trt11, tiny_onnx, tmp_path, monkeypatch):
    monkeypatch.setenv("BONEDEPLOY_CACHE_DIR", "off")
    res = bt.build_engine(tiny_onnx[0], tmp_path / "model.trt", tiny_onnx[1], bt.BatchProfile(),
                          cache_dir=tmp_path / "mine", log=lambda m: None)
    assert res.timing_cache is not None and res.timing_cache.parent == tmp_path / "mine"


def test_every_parser_error_is_reported_in_full(monkeypatch, tiny_onnx, tmp_path):
    errors = [("Unsupported operator Foo", 3, "Foo"), ("Invalid weights\nshape (3,) vs (4,)", 7, "Bar")]
    monkeypatch.setitem(sys.modules, "tensorrt", fake_tensorrt11([], parse_errors=errors))
    with pytest.raises(ArtefactError) as info:
        bt.build_engine(tiny_onnx[0], tmp_path / "m.trt", tiny_onnx[1], bt.BatchProfile(), facts=FACTS,
                        use_timing_cache=False, log=lambda m: None)
    assert str(info.value).splitlines() == [
        f"{tiny_onnx[0]}: TensorRT's ONNX parser failed:",
        "  [node 3 (Foo_3, Foo)] UNSUPPORTED_NODE: Unsupported operator Foo",
        "  [node 7 (Bar_7, Bar)] UNSUPPORTED_NODE: Invalid weights",
        "  shape (3,) vs (4,)",
    ]
    assert not (tmp_path / "m.trt").exists() and not (tmp_path / "m.trt.json").exists()


def test_a_failed_build_leaves_no_engine_and_keeps_what_tensorrt_logged(monkeypatch, tiny_onnx, tmp_path):
    log = ["[optimizer] Error Code 4: no tactic for node Conv_0\nrequested 9000 MiB", "second error"]
    monkeypatch.setitem(sys.modules, "tensorrt", fake_tensorrt11([], build_ok=False, build_log=log))
    with pytest.raises(ArtefactError) as info:
        bt.build_engine(tiny_onnx[0], tmp_path / "m.trt", tiny_onnx[1], bt.BatchProfile(), facts=FACTS,
                        use_timing_cache=False, log=lambda m: None)
    lines = str(info.value).splitlines()
    assert "could not build an engine" in lines[0]
    assert lines[1:] == ["  [optimizer] Error Code 4: no tactic for node Conv_0", "  requested 9000 MiB",
                         "  second error"]
    assert list(tmp_path.iterdir()) == []


def test_the_builder_stand_in_offers_only_what_tensorrt_has():
    """Every stand-in member our builder code uses exists in TensorRT 10.13 (tensorrt-stubs), is not
    removed in 11, and has TensorRT's kind and arity: a call TensorRT lacks fails here."""
    from backends import trtstubs

    if not trtstubs.stub_files():
        pytest.skip("tensorrt-stubs is not installed (pip install --no-deps tensorrt-stubs)")
    trt = fake_tensorrt11([])
    stand_ins = {"": trt, "ILogger.Severity": trt.ILogger.Severity,
                 **{name: getattr(trt, name) for name in vars(trt) if isinstance(getattr(trt, name), type)}}
    used = trtstubs.attribute_names(Path(bt.__file__).read_text())
    assert {"parse_from_file", "set_shape", "build_serialized_network", "desc"} <= used
    assert trtstubs.stand_in_problems(stand_ins, used, trtstubs.surface()) == []


def test_export_pipeline_builds_and_gates_the_engine_with_the_stand_in(trt11, tmp_path, monkeypatch):
    """Orchestration only: the stand-in engine's outputs are the fp16 ONNX outputs."""
    from bonedeploy.export import from_onnx as engine_only
    from bonedeploy.export.from_checkpoint import ExportConfig, run_export
    from bonedeploy.export.gate import onnx_cpu_outputs

    monkeypatch.setattr(engine_only, "engine_logits",
                        lambda engine, inputs, mb: onnx_cpu_outputs(engine.with_name("model.fp16.onnx"), inputs))
    data = make_tree(tmp_path / "data", per_class=3)
    ckpt = make_checkpoint(tmp_path / "run" / "best.pt")
    res = run_export(ExportConfig(ckpt, data=data, timing_cache_dir=tmp_path / "cache"))
    assert [f.path.name for f in res.files] == ["model.onnx", "model.fp16.onnx", "model.trt"]
    assert all(f.passed for f in res.files) and res.engine["built"] and res.engine["from"] == "model.fp16.onnx"
    side = json.loads((tmp_path / "run" / "model.trt.json").read_text())
    from bonedeploy.util.fs import sha256_file
    assert side["onnx"]["sha256"] == sha256_file(tmp_path / "run" / "model.fp16.onnx")
    report = json.loads((tmp_path / "run" / "export.json").read_text())
    assert report["engine"]["built"] and report["files"][2]["kind"] == "engine"

    # On the target: `bonedeploy export model.fp16.onnx` builds only the engine.
    (tmp_path / "run" / "model.trt").unlink()
    res = run_export(ExportConfig(tmp_path / "run" / "model.fp16.onnx", data=data,
                                  timing_cache_dir=tmp_path / "cache"))
    assert [f.path.name for f in res.files] == ["model.trt"] and res.files[0].passed
    assert res.report.name == "export-engine.json" and (tmp_path / "run" / "model.trt").is_file()


def test_onnx_input_without_tensorrt_names_the_command_to_run(tmp_path, monkeypatch):
    from bonedeploy.export.from_checkpoint import ExportConfig, run_export

    def missing():
        raise BackendUnavailableError("TensorRT is not installed here (stand-in)")

    monkeypatch.setattr("bonedeploy.backends.device_facts.runtime_facts", missing)
    from bonedeploy.export import onnx as ox
    from bonedeploy.models import create_model
    from exportkit import register_tiny

    register_tiny()
    proto = ox.export_fp32(create_model("tiny_test"), ModelCard(model="tiny_test", preprocess=PreprocessSpec(crop_size=32)))
    path = ox.save_onnx(proto, tmp_path / "model.onnx")
    with pytest.raises(BackendUnavailableError, match=r"no engine built: TensorRT is not installed.*bonedeploy export .*model\.onnx"):
        run_export(ExportConfig(path))


# --- (c) real TensorRT ----------------------------------------------------------------------------
def _real_trt_or_skip():
    ok, why = bt.tensorrt_available()
    if not ok:
        pytest.skip(f"needs TensorRT and a CUDA GPU: {why}")


@pytest.mark.tensorrt
def test_real_engine_from_fp16_matches_pytorch(tmp_path):
    _real_trt_or_skip()
    from bonedeploy.export.from_checkpoint import ExportConfig, run_export

    data = make_tree(tmp_path / "data", per_class=4, size=(420, 410))
    ckpt = make_checkpoint(tmp_path / "run" / "best.pt", model="vgg8")
    res = run_export(ExportConfig(ckpt, data=data, trt=True, batch=bt.BatchProfile(1, 4, 8),
                                  timing_cache_dir=tmp_path / "cache"))
    engine = [f for f in res.files if f.kind == "engine"]
    assert engine and engine[0].passed, engine and engine[0].failures
    from bonedeploy.backends.base import open_backend

    with open_backend(tmp_path / "run" / "model.trt") as b:
        out = b.infer(np.zeros((3, 1, 400, 400), np.float32))
    assert out.shape == (3, 2) and np.isfinite(out).all()
