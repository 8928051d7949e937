"""``bonedeploy compare``: layers paired by source layer across .pt, ONNX and OpenVINO IR, the
first layer that diverges, each flipped decision traced to its layer, and unpaired layers named
with a reason. The planted tiny_outlier model (tests/precisionkit.py) fails at its BatchNorm: the
layer where the crushed channels stop being hidden behind the planted one."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from precisionkit import HAS_OPENVINO

onnx = pytest.importorskip("onnx")

from bonedeploy.export.compare import CompareConfig, Side, pair_layers, run_compare  # noqa: E402
from bonedeploy.export.taps import Layer  # noqa: E402

BN_LAYER = "3"  # nn.Sequential index of the BatchNorm that takes the planted factor back out


def layer(report, name):
    return next(r for r in report["layers"] if r["layer"] == name)


def test_pt_against_plain_int8_finds_the_planted_layer(planted_ckpt, planted_plain, tmp_path):
    int8 = planted_plain.out_dir / "model.int8.onnx"
    report = run_compare(CompareConfig(planted_ckpt, int8, out=tmp_path / "cmp"))
    assert report["layers_from"] == "module map in model.int8.onnx" and report["unpaired"] == []
    assert [r["layer"] for r in report["layers"]] == ["0", "1", "2", "3", "4", "5", "6", "7", "8"]
    assert report["first_crossing"]["layer"] == BN_LAYER
    first = layer(report, "0")  # the planted conv: fine as one tensor, crushed channel by channel
    assert first["local_source"] == "qdq" and first["local_sqnr_db"] > 30 and first["local_channel_sqnr_db"] < 3
    assert first["sqnr_db"] > 30 and layer(report, BN_LAYER)["sqnr_db"] < 3
    d = report["decisions"]
    assert d["flips"] == len(report["flips"]) > 0 and d["missed_positives"] > 0
    for f in report["flips"]:
        assert f["diverges_at"]["layer"] == BN_LAYER
        assert f["ref_distance"] == pytest.approx(f["ref_prob"] - 0.5)
    saved = json.loads((tmp_path / "cmp" / "compare.json").read_text())
    assert saved["first_crossing"] == report["first_crossing"] and (tmp_path / "cmp" / "layers.png").is_file()


def test_the_repaired_file_keeps_the_planted_layers_float(planted_repaired, outlier_data, tmp_path):
    out = planted_repaired.out_dir
    report = run_compare(CompareConfig(out / "model.onnx", out / "model.int8.onnx", data=outlier_data,
                                       out=tmp_path / "cmp"))
    kept_layers = {k["layer"] for k in next(f for f in planted_repaired.files
                                             if f.path.name == "model.int8.onnx").repair["kept_float"]}
    for name in kept_layers:  # a float island computes what fp32 computes
        assert layer(report, name)["local_source"] is None
    assert report["first_crossing"] is None and report["flips"] == []
    assert layer(report, "8")["local_source"] == "qdq"  # the rest is still int8


def test_without_a_module_map_graphs_pair_by_tensor_and_a_missing_one_is_named(planted_plain, tmp_path):
    from bonedeploy.export import onnx as ox
    from bonedeploy.export.layermap import CARD_KEY

    def copy_without_map(src: Path, dst: Path, rename: str | None = None) -> Path:
        proto = onnx.load(str(src))
        card = ox.read_card(proto)
        ox.set_card(proto, card.with_(extra={k: v for k, v in card.extra.items() if k != CARD_KEY}))
        for node in proto.graph.node if rename else ():
            node.input[:] = [f"{i}_renamed" if i == rename else i for i in node.input]
            node.output[:] = [f"{o}_renamed" if o == rename else o for o in node.output]
        onnx.save(proto, str(dst))
        return dst

    ref = copy_without_map(planted_plain.out_dir / "model.onnx", tmp_path / "ref.onnx")
    cand = copy_without_map(planted_plain.out_dir / "model.int8.onnx", tmp_path / "cand.int8.onnx", rename="relu")
    report = run_compare(CompareConfig(ref, cand, out=tmp_path / "cmp", parity_n=8))
    assert report["layers_from"] == "graph of ref.onnx (no module map recorded)"
    assert layer(report, "conv2d")["candidate_tensor"] == "conv2d_DequantizeLinear_Output"
    assert report["unpaired"] == [{"layer": "relu", "kind": "Relu", "tensor": "relu",
                                   "reason": "no tensor 'relu' in cand.int8.onnx (fused away or renamed when it "
                                             "was built)"}]


def test_an_artefact_without_taps_lists_every_layer_with_the_reason():
    """A stand-in Side (no TensorRT here): only the pairing glue is tested."""
    engine = Side(Path("model.fp16.engine"), backend=None, tapper=None)
    paired, unpaired = pair_layers([Layer("0", "Conv2d", "conv2d")], engine, engine)
    assert paired == [] and len(unpaired) == 1
    assert "model.fp16.engine exposes only its outputs" in unpaired[0]["reason"]


@pytest.mark.skipif(not HAS_OPENVINO, reason="needs OpenVINO")
def test_openvino_ir_pairs_through_the_map_and_each_probe_is_checked(planted_repaired, outlier_data, tmp_path):
    out = planted_repaired.out_dir
    report = run_compare(CompareConfig(out / "model.xml", out / "model.int8.xml", data=outlier_data,
                                       parity_n=16, out=tmp_path / "cmp"))
    assert report["decisions"]["agreement"] == 1.0
    names = [r["layer"] for r in report["layers"]] + [u["layer"] for u in report["unpaired"]]
    assert sorted(names) == ["0", "1", "2", "3", "4", "5", "6", "7", "8"]  # each one paired or explained
    assert len(report["layers"]) >= 5
    for u in report["unpaired"]:
        assert "changes what model" in u["reason"] or "no tensor named" in u["reason"]


def test_onnx_against_onnx_never_imports_torch(planted_plain, outlier_data, tmp_path):
    out = planted_plain.out_dir
    code = ("import sys; sys.modules['torch'] = None\n"
            "from bonedeploy.export.compare import CompareConfig, run_compare\n"
            f"r = run_compare(CompareConfig({str(out / 'model.onnx')!r}, {str(out / 'model.int8.onnx')!r}, "
            f"data={str(outlier_data)!r}, out={str(tmp_path / 'c')!r}, parity_n=4, plot=False))\n"
            "assert r['layers'] and 'torch' not in [m for m in sys.modules if sys.modules[m] is not None]\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]


def test_module_map_names_modules_and_leaves_out_what_has_no_tensor(tmp_path):
    """tiny_test: Conv -> BatchNorm (folded into the conv) -> ReLU -> pool -> Flatten -> Dropout -> Linear."""
    torch = pytest.importorskip("torch")
    from exportkit import register_tiny

    from bonedeploy.artefacts.card import ModelCard
    from bonedeploy.data.preprocess import PreprocessSpec
    from bonedeploy.export import onnx as ox
    from bonedeploy.models import create_model

    torch.manual_seed(0)
    model = create_model(register_tiny()).eval()
    proto = ox.export_fp32(model, ModelCard(model="tiny_test", preprocess=PreprocessSpec(crop_size=32)))
    layers = ox.read_card(proto).extra["layers"]
    modules = dict(model.named_modules())
    tensors = {o for n in proto.graph.node for o in n.output}
    assert [e["module"] for e in layers] == ["1", "2", "3", "4", "6"]  # 0 folded into 1, 5 is Dropout
    assert layers[0]["type"] == "BatchNorm2d" and layers[0]["op"] == "Conv"
    assert all(e["module"] in modules and e["tensor"] in tensors for e in layers)
    assert layers[-1]["tensor"] == "logits"


def test_a_device_outside_the_choices_is_refused_with_them(tmp_path):
    with pytest.raises(Exception, match=r"--device 'gpu'; valid: auto, cpu, cuda"):
        CompareConfig(tmp_path / "best.pt", tmp_path / "model.onnx", device="gpu")


@pytest.mark.skipif(not __import__("torch").cuda.is_available(), reason="needs a CUDA GPU (none on this machine)")
def test_the_pt_on_cuda_finds_the_same_layer_as_on_the_cpu(planted_ckpt, planted_plain, tmp_path):
    int8 = planted_plain.out_dir / "model.int8.onnx"
    cpu = run_compare(CompareConfig(planted_ckpt, int8, out=tmp_path / "cpu"))
    cuda = run_compare(CompareConfig(planted_ckpt, int8, out=tmp_path / "cuda", device="cuda"))
    assert cuda["first_crossing"]["layer"] == cpu["first_crossing"]["layer"] == BN_LAYER
    assert cuda["decisions"]["flips"] == cpu["decisions"]["flips"]
