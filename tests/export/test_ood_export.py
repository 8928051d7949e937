"""The OOD head in every exported file: the graph's second output equals the checkpoint's score,
reduced precision leaves the head in float32, the gate compares OOD decisions, old checkpoints
export as before."""

import json

import numpy as np
import pytest

pytest.importorskip("onnx")
pytest.importorskip("torch")

from bonedeploy.artefacts.checkpoint import card_from_checkpoint, load_checkpoint  # noqa: E402
from bonedeploy.backends import open_backend  # noqa: E402
from bonedeploy.export.from_checkpoint import ExportConfig, run_export  # noqa: E402
from exportkit import gated_checkpoint, make_checkpoint, make_tree  # noqa: E402


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    root = tmp_path_factory.mktemp("ood-export")
    ckpt = gated_checkpoint(root, per_class=20)
    res = run_export(ExportConfig(ckpt, precisions=("fp32", "fp16", "int8"), calib=root / "data", repair="off"))
    return ckpt, res


def _x(n=12, seed=0):
    x = np.random.default_rng(seed).random((n, 1, 32, 32), dtype=np.float32)
    x[0] = 0.0  # blank
    x[1] = np.random.default_rng(9).random((32, 32)) > 0.5  # salt and pepper
    return x


def test_fp32_and_fp16_compute_the_checkpoints_score(exported):
    ckpt, res = exported
    x = _x()
    with open_backend(ckpt, device="cpu") as pt:
        ref_logits, ref = pt.infer_scored(x)
        assert pt.gives_ood_score
    card = card_from_checkpoint(load_checkpoint(ckpt))
    for f in res.files:
        with open_backend(f.path, provider="cpu") as b:
            logits, score = b.infer_scored(x)
            assert b.gives_ood_score
        assert score[0] >= 2.0 ** 99 and ref[0] >= 2.0 ** 99  # the blank image, in every precision
        if f.precision == "int8":
            continue  # its own gate: the next test
        assert b.card.ood == card.ood
        np.testing.assert_allclose(score[1:], ref[1:], rtol={"fp32": 1e-4, "fp16": 0.05}[f.precision])


def test_the_int8_gate_is_refitted_on_what_the_int8_graph_computes(exported):
    from bonedeploy.eval.ood import choose_threshold
    from bonedeploy.eval.parity import select_parity_set

    ckpt, res = exported
    ref = card_from_checkpoint(load_checkpoint(ckpt)).ood
    int8 = next(f.path for f in res.files if f.precision == "int8")
    with open_backend(int8, provider="cpu") as b:
        gate = b.card.ood
        val = select_parity_set(ckpt=load_checkpoint(ckpt), spec=b.card.preprocess)
        scores = b.infer_scored(val.x)[1]
    assert "features computed by the int8 graph" in gate.fitted_on and "scored by the int8 graph" in gate.threshold_on
    assert gate.threshold == pytest.approx(choose_threshold(scores, ref.target_fpr).threshold, rel=1e-5)
    assert (gate.method, gate.target_fpr, gate.n_images) == (ref.method, ref.target_fpr, ref.n_images)


def test_reduced_precision_keeps_the_head_in_float32(exported):
    import onnx

    from bonedeploy.export.onnx import OOD_PREFIX, ood_nodes

    _, res = exported
    by = {f.precision: onnx.load(str(f.path)) for f in res.files}
    fp32_heads = ood_nodes(by["fp32"].graph)
    assert fp32_heads and all(n.startswith(OOD_PREFIX) for n in fp32_heads)
    inits16 = {i.name: i.data_type for i in by["fp16"].graph.initializer}
    head_inits = {i for n in by["fp16"].graph.node if n.name in fp32_heads for i in n.input if i in inits16}
    floats = {i for i in head_inits if inits16[i] in (onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16)}
    assert floats and all(inits16[i] == onnx.TensorProto.FLOAT for i in floats)  # (the rest: int64 axes)
    int8 = by["int8"].graph
    producers = {o: n for n in int8.node for o in n.output}
    head = [n for n in int8.node if n.name.startswith(OOD_PREFIX)]
    assert head and not any(n.op_type in ("QuantizeLinear", "DequantizeLinear") for n in head)
    # no head input is the int8 tensor of a QuantizeLinear: the head reads float tensors
    assert not any(producers.get(i) is not None and producers[i].op_type == "QuantizeLinear"
                   for n in head for i in n.input)


def test_the_gate_compares_ood_decisions_and_reports_them(exported):
    ckpt, res = exported
    report = json.loads((ckpt.parent / "export.json").read_text())
    assert report["parity_inputs"]["ood_probes"] > 0
    for f in report["files"]:
        p = f["parity"]
        assert p["ood_scored"] and p["ood_n"] == report["parity_inputs"]["n"] + report["parity_inputs"]["ood_probes"]
        assert p["ood_agreement"] >= 0.9 and "OOD decisions" in f["gate"]


def test_a_checkpoint_without_a_gate_exports_one_output_as_before(tmp_path):
    import onnx

    data = make_tree(tmp_path / "data", per_class=4)
    ckpt = make_checkpoint(tmp_path / "best.pt", data_root=data)
    res = run_export(ExportConfig(ckpt, precisions=("fp32",)))
    model = onnx.load(str(res.files[0].path))
    assert [o.name for o in model.graph.output] == ["logits"] and res.files[0].passed
    assert res.files[0].parity["ood_n"] is None
    with open_backend(res.files[0].path) as b:
        assert not b.gives_ood_score and b.infer_scored(np.zeros((1, 1, 32, 32), np.float32))[1] is None


def test_int8_head_reads_the_image_itself_so_the_first_conv_stays_int8(exported, tmp_path):
    """The quantizer hands the head the first conv's DequantizeLinear of the image; shared, it kept
    onnxruntime from fusing that conv into QLinearConv (the conv ran in float)."""
    import json

    import onnx
    import onnxruntime as ort

    from bonedeploy.export.onnx import ood_nodes

    _, res = exported
    int8 = next(f.path for f in res.files if f.precision == "int8")
    graph = onnx.load(str(int8)).graph
    image = graph.input[0].name
    head = ood_nodes(graph)
    assert any(image in n.input for n in graph.node if n.name in head)  # the input check: raw pixels
    readers = [n for n in graph.node if image in n.input and n.name not in head]
    assert [n.op_type for n in readers] == ["QuantizeLinear"]
    so = ort.SessionOptions()
    so.enable_profiling = True
    so.profile_file_prefix = str(tmp_path / "profile")
    session = ort.InferenceSession(str(int8), so, providers=["CPUExecutionProvider"])
    session.run(None, {image: _x(4)})
    ops = {e["args"].get("op_name") for e in json.loads(open(session.end_profiling()).read())
           if e.get("cat") == "Node"}
    assert "QLinearConv" in ops and "Conv" not in ops  # every conv of the trunk runs in int8


def test_the_feature_layer_is_compared_like_any_other(exported, tmp_path):
    """The head's pooling is traced outside the hooked layer's scope, so the module map names the
    layer's own output and compare pairs every layer of the gated model."""
    from bonedeploy.export.compare import CompareConfig, run_compare

    ckpt, res = exported
    fp32 = next(f.path for f in res.files if f.precision == "fp32")
    report = run_compare(CompareConfig(ckpt, fp32, out=tmp_path / "cmp", plot=False))
    assert report["unpaired"] == [] and report["layers"]
