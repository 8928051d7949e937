"""onnxruntime backend: card from metadata_props, provider choice, threads, fixed batches, errors."""

import os

import numpy as np
import pytest

from bonedeploy.backends import onnxrt
from bonedeploy.backends.onnxrt import OnnxRuntimeBackend, physical_cores, resolve_provider
from bonedeploy.errors import ArtefactError, BackendUnavailableError, ConfigError
from onnxkit import tiny_card, tiny_logits, tiny_onnx_classifier

ALL = ["TensorrtExecutionProvider", "CUDAExecutionProvider", "AzureExecutionProvider", "CPUExecutionProvider"]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return tiny_onnx_classifier(tmp_path_factory.mktemp("onnx") / "tiny.onnx")


def batch(n, size=32, seed=0):
    return np.random.default_rng(seed).random((n, 1, size, size), dtype=np.float32)


def test_runs_the_graph_and_reads_the_card_from_metadata(tiny):
    with OnnxRuntimeBackend(tiny) as b:
        assert b.card == tiny_card()
        x = batch(5)
        np.testing.assert_allclose(b.infer(x), tiny_logits(x), atol=1e-5)
        assert b.declared_input_shape() == (1, 32, 32)
        assert b.declared_output_width() == 2
        d = b.describe()
    assert d["providers"] == ["CPUExecutionProvider"] and d["threads"] == physical_cores()
    assert not b.loaded


def test_wrong_input_shape_is_refused_with_the_expected_one(tiny):
    with OnnxRuntimeBackend(tiny) as b, pytest.raises(ConfigError, match="1 x 32 x 32"):
        b.infer(batch(2, size=31))


def test_graph_with_a_fixed_batch_pads_and_splits(tmp_path):
    path = tiny_onnx_classifier(tmp_path / "fixed.onnx", graph_shape=(4, 1, 32, 32))
    with OnnxRuntimeBackend(path) as b:
        x = batch(9)
        np.testing.assert_allclose(b.infer(x), tiny_logits(x), atol=1e-5)
        outs = b.infer_outputs(x)  # every output by name, split and padded alike
        assert list(outs) == b.output_names and len(outs[b.output_names[0]]) == 9
        np.testing.assert_allclose(outs[b.output_names[0]], tiny_logits(x), atol=1e-5)


def test_string_options_parse_to_their_types(tiny):
    """``--backend-option threads=1 --backend-option spinning=false`` arrive as strings."""
    b = OnnxRuntimeBackend(tiny, threads="1", spinning="false", device="CPU")
    assert b.threads == 1 and b.spinning is False and b.device == "cpu"
    with b:
        assert b.describe()["spinning"] is False and b.describe()["threads"] == 1
    with pytest.raises(ConfigError, match="onnxruntime backend: threads '0'; expected a positive integer"):
        OnnxRuntimeBackend(tiny, threads="0")


def test_fp16_graph_with_float32_io_runs(tmp_path, tiny):
    onnx = pytest.importorskip("onnx")
    from onnxconverter_common import float16

    half = float16.convert_float_to_float16(onnx.load(tiny), keep_io_types=True)
    onnx.save(half, tmp_path / "tiny.fp16.onnx")
    with OnnxRuntimeBackend(tmp_path / "tiny.fp16.onnx") as b:
        x = batch(3)
        np.testing.assert_allclose(b.infer(x), tiny_logits(x), atol=2e-2)


def test_onnx_without_bonedeploy_metadata_is_refused(tmp_path):
    import onnx

    path = tiny_onnx_classifier(tmp_path / "plain.onnx")
    model = onnx.load(path)
    del model.metadata_props[:]
    onnx.save(model, path)
    with pytest.raises(ArtefactError, match="plain.onnx.*no bonedeploy metadata"):
        OnnxRuntimeBackend(path).load()


def test_corrupt_file_is_one_clear_error(tmp_path):
    path = tmp_path / "junk.onnx"
    path.write_bytes(b"this is not a protobuf" * 10)
    with pytest.raises(ArtefactError, match="junk.onnx: onnxruntime cannot load it"):
        OnnxRuntimeBackend(path).load()


@pytest.mark.parametrize("available, device, chain", [
    (ALL, "auto", ["CUDAExecutionProvider", "CPUExecutionProvider"]),
    (["CUDAExecutionProvider", "CPUExecutionProvider"], "auto", ["CUDAExecutionProvider", "CPUExecutionProvider"]),
    (["TensorrtExecutionProvider", "CPUExecutionProvider"], "auto", ["CPUExecutionProvider"]),
    (["AzureExecutionProvider", "CPUExecutionProvider"], "auto", ["CPUExecutionProvider"]),
    (ALL, "cpu", ["CPUExecutionProvider"]),
    (ALL, "cuda", ["CUDAExecutionProvider", "CPUExecutionProvider"]),
])
def test_automatic_provider_order_is_cuda_then_cpu_never_tensorrt(available, device, chain):
    """The TensorRT EP builds an engine per session: never an automatic choice."""
    assert resolve_provider(None, available, device) == chain


def test_tensorrt_ep_only_when_asked_then_with_cuda_and_cpu_behind_it():
    trt = ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"]
    assert resolve_provider("tensorrt", ALL) == trt
    assert resolve_provider("TensorrtExecutionProvider", ALL, "cuda") == trt
    assert resolve_provider("tensorrt", ["TensorrtExecutionProvider", "CPUExecutionProvider"]) == [
        "TensorrtExecutionProvider", "CPUExecutionProvider"]


def test_tensorrt_ep_options_turn_on_engine_and_timing_caches(tmp_path):
    cache = onnxrt.ort_trt_cache_dir("ab" * 32, "NVIDIA H100 80GB HBM3", "9.0", "10.13.0.35", "1.22.0",
                                     tmp_path)
    assert cache == tmp_path / "nvidia-h100-80gb-hbm3-sm90-trt10.13.0.35-ort1.22.0" / ("ab" * 32)
    chain = resolve_provider("tensorrt", ALL)
    assert onnxrt.provider_options(chain, cache) == [
        {"trt_engine_cache_enable": "True", "trt_engine_cache_path": str(cache),
         "trt_timing_cache_enable": "True", "trt_timing_cache_path": str(cache.parent / "timing")},
        {}, {}]
    assert onnxrt.provider_options(resolve_provider(None, ALL), None) == [{}, {}]


@pytest.mark.parametrize("change", [{"gpu_name": "NVIDIA A100-SXM4-40GB", "compute_capability": "8.0"},
                                    {"tensorrt_version": "10.3.0"}, {"ort_version": "1.23.0"},
                                    {"model_sha256": "cd" * 32}])
def test_the_ort_engine_cache_is_keyed_by_gpu_versions_and_model(change, tmp_path):
    key = dict(model_sha256="ab" * 32, gpu_name="NVIDIA H100 80GB HBM3", compute_capability="9.0",
               tensorrt_version="10.13.0.35", ort_version="1.22.0", base=tmp_path)
    assert onnxrt.ort_trt_cache_dir(**{**key, **change}) != onnxrt.ort_trt_cache_dir(**key)


@pytest.fixture
def fake_tensorrt_ep(monkeypatch):
    """Glue only (no TensorRT EP here): records what reaches InferenceSession, runs on the CPU."""
    import onnxruntime as ort

    seen, real = {}, ort.InferenceSession

    def session(path, sess_options=None, providers=None, provider_options=None):
        seen.update(providers=providers, provider_options=provider_options)
        return real(path, sess_options=sess_options, providers=["CPUExecutionProvider"])

    monkeypatch.setattr(ort, "get_available_providers", lambda: ALL)
    monkeypatch.setattr(ort, "InferenceSession", session)
    monkeypatch.setattr("bonedeploy.backends.device_facts.cuda_facts",
                        lambda device=0: {"gpu_name": "NVIDIA H100 80GB HBM3", "compute_capability": "9.0"})
    return seen


@pytest.mark.parametrize("env", ["XDG_CACHE_HOME", "BONEDEPLOY_CACHE_DIR"])
def test_asking_for_tensorrt_passes_the_cache_options_to_onnxruntime(tiny, fake_tensorrt_ep, monkeypatch,
                                                                      tmp_path, env):
    monkeypatch.delenv("BONEDEPLOY_CACHE_DIR", raising=False)
    monkeypatch.setenv(env, str(tmp_path))
    root = tmp_path / "bonedeploy" if env == "XDG_CACHE_HOME" else tmp_path  # modelcache.cache_root's rule
    with OnnxRuntimeBackend(tiny, provider="tensorrt") as b:
        cache = b.describe()["tensorrt_cache"]
    from bonedeploy.util.fs import sha256_file

    seen = fake_tensorrt_ep
    assert seen["providers"] == ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"]
    assert seen["provider_options"][0]["trt_engine_cache_path"] == cache
    assert cache.startswith(str(root / "ort-trt" / "nvidia-h100-80gb-hbm3-sm90-trt"))
    assert cache.endswith(sha256_file(tiny)) and seen["provider_options"][1:] == [{}, {}]


def test_cache_off_gives_the_tensorrt_ep_no_engine_cache(tiny, fake_tensorrt_ep, monkeypatch, tmp_path):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("BONEDEPLOY_CACHE_DIR", "off")
    with OnnxRuntimeBackend(tiny, provider="tensorrt") as b:
        assert "tensorrt_cache" not in b.describe() and b.trt_cache is None
    assert fake_tensorrt_ep["provider_options"] == [{}, {}, {}]
    assert list(tmp_path.iterdir()) == []  # nothing written anywhere


def test_provider_override_accepts_aliases_and_lists_what_is_available():
    assert resolve_provider("cuda", ALL) == ["CUDAExecutionProvider", "CPUExecutionProvider"]
    assert resolve_provider("CPUExecutionProvider", ALL) == ["CPUExecutionProvider"]
    assert resolve_provider("TensorRT", ALL)[0] == "TensorrtExecutionProvider"
    with pytest.raises(ConfigError, match="available providers: AzureExecutionProvider, CPUExecutionProvider"):
        resolve_provider("cuda", ["AzureExecutionProvider", "CPUExecutionProvider"])
    with pytest.raises(BackendUnavailableError, match="no CUDA provider"):
        resolve_provider(None, ["CPUExecutionProvider"], "cuda")
    with pytest.raises(ConfigError, match="valid: auto, cpu, cuda"):
        resolve_provider(None, ALL, "tpu")


def test_unavailable_provider_fails_at_load_with_the_list(tiny):
    with pytest.raises(ConfigError, match="not available here; available providers: .*CPUExecutionProvider"):
        OnnxRuntimeBackend(tiny, provider="tensorrt").load()


def test_failing_accelerator_falls_back_and_says_why(tiny, monkeypatch):
    """onnxruntime-gpu lists the CUDA EP even when CUDA's libraries are missing; then session
    creation fails and the next provider must be used, with the reason recorded."""
    import onnxruntime as ort

    real = ort.InferenceSession

    def session(path, sess_options=None, providers=None, provider_options=None):
        if providers[0] != "CPUExecutionProvider":
            raise RuntimeError("libcudnn.so.9: cannot open shared object file")
        return real(path, sess_options=sess_options, providers=providers, provider_options=provider_options)

    monkeypatch.setattr(ort, "get_available_providers", lambda: ALL)
    monkeypatch.setattr(ort, "InferenceSession", session)
    with OnnxRuntimeBackend(tiny) as b:
        assert "libcudnn" in b.describe()["provider_fallback"]
        assert b.infer(batch(1)).shape == (1, 2)


def test_physical_cores_is_within_the_affinity_mask():
    assert 1 <= physical_cores() <= len(os.sched_getaffinity(0))


def test_threads_option_overrides(tiny):
    with OnnxRuntimeBackend(tiny, threads=1) as b:
        assert b.describe()["threads"] == 1
