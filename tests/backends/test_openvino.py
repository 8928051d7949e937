"""OpenVINO backend: card from metadata, parity with onnxruntime through the export gates (fp32,
fp16, int8 QDQ, IR), shapes, options, the sha256-keyed compiled-model cache, no torch."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ov = pytest.importorskip("openvino", reason="OpenVINO is not installed (pip install 'bonedeploy[openvino]')")

from bonedeploy.backends import backend_for_path  # noqa: E402
from bonedeploy.backends.onnxrt import OnnxRuntimeBackend  # noqa: E402
from bonedeploy.backends.openvino import OpenVinoBackend  # noqa: E402
from bonedeploy.errors import ArtefactError, ConfigError  # noqa: E402
from bonedeploy.eval import parity  # noqa: E402
from onnxkit import tiny_card, tiny_logits, tiny_onnx_classifier  # noqa: E402


@pytest.fixture(autouse=True)
def cache_root(tmp_path, monkeypatch):
    root = tmp_path / "cache"
    monkeypatch.setenv("BONEDEPLOY_CACHE_DIR", str(root))
    return root


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return tiny_onnx_classifier(tmp_path_factory.mktemp("onnx") / "tiny.onnx")


def batch(n, size=32, seed=0):
    return np.random.default_rng(seed).random((n, 1, size, size), dtype=np.float32)


def both(path, x, **options):
    with OnnxRuntimeBackend(path) as r, OpenVinoBackend(path, **options) as o:
        return r.infer(x), o.infer(x)


def gate(ref, cand, precision, classes=("Fractured", "Normal")):
    result = parity.compare(ref, cand, [f"img{i}" for i in range(len(ref))], classes)
    return list(parity.check_gate(result, precision))


def test_runs_onnx_reads_the_card_and_describes_version_and_device(tiny):
    with OpenVinoBackend(tiny, cache=False) as b:
        assert b.card == tiny_card()
        x = batch(5)
        np.testing.assert_allclose(b.infer(x), tiny_logits(x), atol=1e-5)
        assert b.declared_input_shape() == (1, 32, 32) and b.declared_output_width() == 2
        d = b.describe()
    assert d["openvino_version"] == ov.get_version() and d["device"] == "CPU"
    assert d["full_device_name"] and d["hint"] == "LATENCY" and d["inference_precision"] == "f32"
    assert not b.loaded


def test_constructor_is_cheap_and_options_are_validated_with_the_choices(tmp_path):
    b = OpenVinoBackend(tmp_path / "absent.onnx", threads=3, streams=2, hint="throughput")
    assert not b.loaded and b.threads == 3 and b.streams == 2 and b.hint == "THROUGHPUT"
    with pytest.raises(ConfigError, match="latency.*throughput"):
        OpenVinoBackend("m.onnx", hint="fastest")
    with pytest.raises(ConfigError, match="valid options"):
        OpenVinoBackend("m.onnx", provider="cpu")
    with pytest.raises(ConfigError, match="cpu, gpu"):
        OpenVinoBackend("m.onnx", device="cuda")
    with pytest.raises(ConfigError, match="positive"):
        OpenVinoBackend("m.onnx", threads="0")
    with pytest.raises(ArtefactError, match="no such file"):
        b.load()


def test_compile_properties_follow_the_options(tiny):
    with OpenVinoBackend(tiny, threads=1, streams=1, hint="latency", cache=False) as b:
        cfg = b.config()
        d = b.describe()
    assert cfg["INFERENCE_NUM_THREADS"] == 1 and cfg["NUM_STREAMS"] == 1 and "CACHE_DIR" not in cfg
    assert d["threads"] == 1 and d["streams"] == 1  # as the compiled model reports them


def test_static_shapes_compile_once_per_batch_size_and_reuse(tiny):
    with OpenVinoBackend(tiny, shapes="static", cache=False) as b:
        for n in (3, 1, 3, 3):
            x = batch(n, seed=n)
            np.testing.assert_allclose(b.infer(x), tiny_logits(x), atol=1e-5)
        assert sorted(b._compiled) == [1, 3]
        first = b._compiled[3]
        b.infer(batch(3))
        assert b._compiled[3] is first


def test_a_graph_with_a_fixed_batch_runs_any_batch(tmp_path):
    path = tiny_onnx_classifier(tmp_path / "fixed.onnx", graph_shape=(4, 1, 32, 32))
    with OpenVinoBackend(path) as b:
        x = batch(9)
        np.testing.assert_allclose(b.infer(x), tiny_logits(x), atol=1e-5)


def test_onnx_without_bonedeploy_metadata_is_refused(tmp_path):
    onnx = pytest.importorskip("onnx")
    path = tiny_onnx_classifier(tmp_path / "t.onnx")
    m = onnx.load(path)
    del m.metadata_props[:]
    onnx.save(m, path)
    with pytest.raises(ArtefactError, match="no bonedeploy metadata"):
        OpenVinoBackend(path, cache=False).load()


def test_a_corrupt_file_is_an_artefact_error_naming_it(tmp_path):
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"not an onnx file")
    with pytest.raises(ArtefactError, match="bad.onnx.*OpenVINO cannot"):
        OpenVinoBackend(bad, cache=False).load()


def test_ir_runs_by_suffix_with_the_card_it_carries(tmp_path, tiny):
    xml = tmp_path / "tiny.xml"
    ov.save_model(ov.convert_model(str(tiny)), str(xml), compress_to_fp16=False)
    assert backend_for_path(xml).name == "openvino"
    with OpenVinoBackend(xml) as b:
        assert b.card == tiny_card() and b.describe()["format"] == "ir"
        x = batch(4)
        np.testing.assert_allclose(b.infer(x), tiny_logits(x), atol=1e-5)
    xml.with_suffix(".bin").unlink()
    with pytest.raises(ArtefactError, match="tiny.bin"):
        OpenVinoBackend(xml).load()


# --- parity with onnxruntime on real conv graphs: fp32, fp16, int8 QDQ --------------------------

@pytest.fixture(scope="module")
def conv_exports(tmp_path_factory):
    """The tiny conv net exported the way ``bonedeploy export`` does (fp32, fp16, int8 QDQ)."""
    pytest.importorskip("torch")
    pytest.importorskip("onnxconverter_common")
    import torch
    from exportkit import make_tree, register_tiny

    from bonedeploy.artefacts.card import ModelCard
    from bonedeploy.data.preprocess import PreprocessSpec
    from bonedeploy.export import onnx as ox
    from bonedeploy.export import precision as prec
    from bonedeploy.models import create_model

    d = tmp_path_factory.mktemp("conv")
    register_tiny()
    torch.manual_seed(0)
    card = ModelCard(model="tiny_test", preprocess=PreprocessSpec(crop_size=32))
    fp32 = ox.export_fp32(create_model("tiny_test").eval(), card)
    paths = {"fp32": ox.save_onnx(fp32, d / "model.onnx")}
    paths["fp16"] = ox.save_onnx(prec.to_fp16(fp32, ox.read_card(fp32)), d / "model.fp16.onnx")
    calib = prec.calibration_set(None, make_tree(d / "calib", per_class=20), card.preprocess)
    paths["int8"] = ox.save_onnx(prec.to_int8(paths["fp32"], ox.read_card(fp32), calib), d / "model.int8.onnx")
    return paths


@pytest.mark.parametrize("precision", ["fp32", "fp16", "int8"])
def test_matches_onnxruntime_within_the_export_gate(conv_exports, precision):
    x = batch(48, seed=1)
    ref, got = both(conv_exports[precision], x)
    assert gate(ref, got, precision) == []
    with OpenVinoBackend(conv_exports[precision]) as b:
        assert b.card.precision == precision


def test_bf16_is_an_option_not_the_default(conv_exports):
    with OpenVinoBackend(conv_exports["fp32"], inference_precision="bf16", cache=False) as b:
        assert b.config()["INFERENCE_PRECISION_HINT"] == "bf16"
    with OpenVinoBackend(conv_exports["fp32"], cache=False) as b:
        assert b.config()["INFERENCE_PRECISION_HINT"] == "f32"


@pytest.mark.slow
def test_int8_alexnet_matches_onnxruntime_within_the_int8_gate(tmp_path):
    """The real architecture at 400 x 400 (random weights, calibrated on noise images)."""
    pytest.importorskip("torch")
    import torch
    from exportkit import make_tree

    from bonedeploy.artefacts.card import ModelCard
    from bonedeploy.data.preprocess import PreprocessSpec
    from bonedeploy.export import onnx as ox
    from bonedeploy.export import precision as prec
    from bonedeploy.models import create_model
    from bonedeploy.models.alexnet import SELECTED

    torch.manual_seed(0)
    card = ModelCard(model=SELECTED, preprocess=PreprocessSpec())
    fp32 = ox.save_onnx(ox.export_fp32(create_model(SELECTED).eval(), card), tmp_path / "model.onnx")
    calib = prec.calibration_set(None, make_tree(tmp_path / "calib", per_class=16, size=(420, 420)),
                                 card.preprocess)
    int8 = ox.save_onnx(prec.to_int8(fp32, card, calib), tmp_path / "model.int8.onnx")
    x = np.random.default_rng(2).random((16, 1, 400, 400), dtype=np.float32)
    ref, got = both(int8, x)
    assert gate(ref, got, "int8") == []
    assert np.abs(ref - got).max() < 0.1 * max(1.0, np.abs(ref).max())


# --- the compiled-model cache ---------------------------------------------------------------

def entries(root):
    return sorted((root / "openvino").iterdir())


def test_a_warm_start_uses_the_cache_without_parsing_the_model(tiny, cache_root):
    x = batch(3)
    with OpenVinoBackend(tiny) as cold:
        y = cold.infer(x)
        assert cold._model is not None and cold.describe()["cache"]
    [d] = entries(cache_root)
    assert any(p.suffix == ".blob" for p in d.iterdir())
    with OpenVinoBackend(tiny) as warm:
        assert warm._model is None  # card and shapes came from the manifest
        assert warm.card == tiny_card()
        np.testing.assert_array_equal(warm.infer(x), y)
        assert "cache_note" not in warm.describe()


def test_a_tampered_blob_is_detected_and_rebuilt_never_loaded(tiny, cache_root):
    x = batch(3)
    with OpenVinoBackend(tiny) as b:
        y = b.infer(x)
    [d] = entries(cache_root)
    blob = next(p for p in d.iterdir() if p.suffix == ".blob")
    blob.chmod(0o644)
    data = bytearray(blob.read_bytes())
    data[len(data) // 2] ^= 0xFF  # one flipped byte: same size, different content
    blob.write_bytes(bytes(data))
    with OpenVinoBackend(tiny) as b:
        assert b._model is not None  # parsed again: the cache was not trusted
        assert "blob changed" in b.describe()["cache_note"]
        np.testing.assert_array_equal(b.infer(x), y)
    with OpenVinoBackend(tiny) as b:  # and the rebuilt cache is good again
        assert b._model is None and "cache_note" not in b.describe()


@pytest.mark.parametrize("damage", ["truncate-blob", "garbage-manifest", "other-version", "no-manifest"])
def test_a_stale_or_corrupt_cache_is_rebuilt(tiny, cache_root, damage):
    x = batch(2)
    with OpenVinoBackend(tiny) as b:
        y = b.infer(x)
    [d] = entries(cache_root)
    manifest = d / "manifest.json"
    if damage == "truncate-blob":
        blob = next(p for p in d.iterdir() if p.suffix == ".blob")
        blob.chmod(0o644)
        blob.write_bytes(blob.read_bytes()[:100])
    elif damage == "garbage-manifest":
        manifest.write_text("{not json")
    elif damage == "other-version":
        m = json.loads(manifest.read_text())
        m["version"] = "0.0.0"
        manifest.write_text(json.dumps(m))
    else:
        manifest.unlink()
    with OpenVinoBackend(tiny) as b:
        assert b._model is not None and "cache rebuilt" in b.describe()["cache_note"]
        np.testing.assert_array_equal(b.infer(x), y)


def test_a_changed_artefact_gets_a_new_cache_entry(tmp_path, cache_root):
    path = tiny_onnx_classifier(tmp_path / "m.onnx", gain=8.0)
    x = batch(2)
    with OpenVinoBackend(path) as b:
        b.infer(x)
    path = tiny_onnx_classifier(tmp_path / "m.onnx", gain=4.0)  # same path, new content
    with OpenVinoBackend(path) as b:
        assert b._model is not None
        np.testing.assert_allclose(b.infer(x), tiny_logits(x, gain=4.0), atol=1e-5)
    assert len(entries(cache_root)) == 2


def test_cache_off_by_environment(tiny, monkeypatch, cache_root):
    monkeypatch.setenv("BONEDEPLOY_CACHE_DIR", "off")
    with OpenVinoBackend(tiny) as b:
        assert "CACHE_DIR" not in b.config() and not b.describe()["cache"]
    assert not cache_root.exists()


def test_never_imports_torch(tiny, tmp_path):
    code = ("import sys; sys.modules['torch'] = None\n"
            "import numpy as np\n"
            "from bonedeploy.backends import open_backend\n"
            f"b = open_backend({str(tiny)!r}, 'openvino').load()\n"
            "print(b.infer(np.ones((1, 1, 32, 32), np.float32)).shape)\n")
    env = {**__import__("os").environ, "BONEDEPLOY_CACHE_DIR": str(tmp_path / "c")}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                         env=env, cwd=Path(__file__).resolve().parents[2])
    assert out.returncode == 0, out.stderr
    assert "(1, 2)" in out.stdout


# --- bonedeploy export --openvino ---------------------------------------------------------------

def test_export_openvino_writes_gated_ir_beside_each_onnx_file(tmp_path):
    pytest.importorskip("torch")
    pytest.importorskip("onnxconverter_common")
    from exportkit import make_checkpoint, make_tree

    from bonedeploy.export.from_checkpoint import run_export
    from bonedeploy.export.results import ExportConfig

    data = make_tree(tmp_path / "data", per_class=20)
    ckpt = make_checkpoint(tmp_path / "run" / "best.pt", data_root=data)
    result = run_export(ExportConfig(source=ckpt, precisions=("fp32", "int8"), trt=False, openvino=True))
    kinds = {(f.kind, f.path.name) for f in result.files}
    assert {("openvino-ir", "model.xml"), ("openvino-ir", "model.int8.xml")} <= kinds
    for f in result.files:
        assert f.passed, (f.path, f.failures)
    ir = next(f for f in result.files if f.path.name == "model.int8.xml")
    assert ir.precision == "int8" and ir.path.with_suffix(".bin").is_file()
    assert not list(ir.path.parent.glob(".*.tmp*"))  # no staging files left behind
    report = json.loads(result.report.read_text())
    assert any(f["kind"] == "openvino-ir" and f["passed"] for f in report["files"])
    with OpenVinoBackend(ir.path) as b:
        assert b.card.precision == "int8" and b.card.model == result.model


def test_export_openvino_from_an_onnx_file_makes_only_its_ir(tmp_path, tiny):
    from bonedeploy.export.from_checkpoint import run_export
    from bonedeploy.export.results import ExportConfig

    result = run_export(ExportConfig(source=tiny, out=tmp_path / "out", openvino=True))
    [f] = result.files
    assert f.kind == "openvino-ir" and f.path == tmp_path / "out" / "tiny.xml" and f.passed
    assert result.report.name == "export-openvino.json"
