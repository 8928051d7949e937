"""torch -> ONNX fp32: the graph contract, metadata, parity with PyTorch, determinism, bad files."""

from pathlib import Path

import numpy as np
import pytest

from exportkit import register_tiny  # noqa: E402

onnx = pytest.importorskip("onnx")
torch = pytest.importorskip("torch")
ort = pytest.importorskip("onnxruntime")

from bonedeploy.artefacts.card import ModelCard  # noqa: E402
from bonedeploy.errors import ArtefactError, ConfigError  # noqa: E402
from bonedeploy.eval.metrics import softmax  # noqa: E402
from bonedeploy.export import onnx as ox  # noqa: E402
from bonedeploy.models import create_model  # noqa: E402
from bonedeploy.data.preprocess import PreprocessSpec  # noqa: E402


def run(proto_or_path, x):
    src = proto_or_path if isinstance(proto_or_path, (str, Path)) else proto_or_path.SerializeToString()
    sess = ort.InferenceSession(src, providers=["CPUExecutionProvider"])
    return sess.run(None, {"image": x})[0]


def probs(logits):
    return softmax(logits, np.float64)


@pytest.fixture(scope="module")
def vgg8():
    torch.manual_seed(0)
    model = create_model("vgg8").eval()
    card = ModelCard(model="vgg8", source_sha256="ab" * 32)
    return model, card, ox.export_fp32(model, card)


def tiny(train_mode=False):
    register_tiny()
    torch.manual_seed(1)
    model = create_model("tiny_test", dropout=0.8)
    model.train(train_mode)
    return model, ModelCard(model="tiny_test", preprocess=PreprocessSpec(crop_size=32))


def test_graph_contract_and_metadata(vgg8):
    _, card, proto = vgg8
    ox.check_onnx(proto, "vgg8.onnx")  # full checker + strict shape inference
    (inp,), (out,) = proto.graph.input, proto.graph.output
    assert inp.name == "image" and out.name == "logits"
    assert inp.type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    dims = inp.type.tensor_type.shape.dim
    assert dims[0].dim_param and [d.dim_value for d in dims[1:]] == [1, 400, 400]
    assert [d.dim_value for d in out.type.tensor_type.shape.dim][1:] == [2]
    assert {o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")} == {ox.DEFAULT_OPSET}
    read = ox.read_card(proto)
    assert (read.model, read.precision, read.classes) == ("vgg8", "fp32", ("Fractured", "Normal"))
    assert read.source_sha256 == "ab" * 32 and read.preprocess == card.preprocess
    assert read.extra["opset"] == ox.DEFAULT_OPSET and "dynamo" in read.extra["exporter"]
    assert ox.input_shape(proto) == (1, 400, 400)


def test_fp32_matches_pytorch_within_gate_at_several_batch_sizes(vgg8):
    model, _, proto = vgg8
    rng = np.random.default_rng(0)
    for n in (1, 3):  # the batch axis is dynamic: batch 1 and 3 though exported with 2
        x = rng.random((n, 1, 400, 400), dtype=np.float32)
        with torch.no_grad():
            ref = model(torch.from_numpy(x)).numpy()
        got = run(proto, x)
        assert got.shape == (n, 2)
        assert np.abs(probs(got) - probs(ref)).max() <= 1e-4


def test_export_is_byte_identical_and_free_of_local_paths(vgg8, tmp_path):
    model, card, proto = vgg8
    again = ox.export_fp32(model, card)
    a, b = ox.save_onnx(proto, tmp_path / "a.onnx"), ox.save_onnx(again, tmp_path / "b.onnx")
    assert a.read_bytes() == b.read_bytes()
    raw = a.read_bytes()
    assert b"stack_trace" not in raw and str(Path(__file__).parents[2]).encode() not in raw
    assert not list(tmp_path.glob(".*.tmp"))  # atomic save leaves no temp file


def test_dropout_is_not_in_the_graph_even_from_a_model_in_train_mode():
    model, card = tiny(train_mode=True)
    proto = ox.export_fp32(model, card)
    assert "Dropout" not in {n.op_type for n in proto.graph.node}
    x = np.random.default_rng(0).random((4, 1, 32, 32), dtype=np.float32)
    with torch.no_grad():
        ref = model.eval()(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(run(proto, x), ref, atol=1e-5)
    np.testing.assert_array_equal(run(proto, x), run(proto, x))


def test_resnet16_exports_with_batchnorm_folded_and_matches_pytorch():
    torch.manual_seed(0)
    model = create_model("resnet16").eval()
    proto = ox.export_fp32(model, ModelCard(model="resnet16"))
    ox.check_onnx(proto, "resnet16.onnx")
    assert "BatchNormalization" not in {n.op_type for n in proto.graph.node}
    x = np.random.default_rng(1).random((2, 1, 400, 400), dtype=np.float32)
    with torch.no_grad():
        ref = model(torch.from_numpy(x)).numpy()
    assert np.abs(probs(run(proto, x)) - probs(ref)).max() <= 1e-4


def test_opset_17_is_accepted_and_16_is_refused_with_the_valid_range():
    model, card = tiny()
    proto = ox.export_fp32(model, card, opset=17)
    assert {o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")} == {17}
    ox.check_onnx(proto, "tiny.onnx")
    with pytest.raises(ConfigError, match=r"valid opsets are 17\.\.23"):
        ox.export_fp32(model, card, opset=16)


def test_load_onnx_names_the_file_and_the_cause(tmp_path):
    model, card = tiny()
    good = ox.save_onnx(ox.export_fp32(model, card), tmp_path / "model.onnx")
    assert ox.read_card(ox.load_onnx(good)).model == "tiny_test"

    truncated = tmp_path / "truncated.onnx"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with pytest.raises(ArtefactError, match=r"truncated\.onnx: not a readable ONNX file"):
        ox.load_onnx(truncated)

    proto = onnx.load(str(good))
    proto.graph.node[0].input[0] = "no_such_tensor"
    broken = tmp_path / "broken.onnx"
    onnx.save(proto, str(broken))
    with pytest.raises(ArtefactError, match=r"broken\.onnx: fails the ONNX checker"):
        ox.load_onnx(broken)

    with pytest.raises(ArtefactError, match="no such file"):
        ox.load_onnx(tmp_path / "missing.onnx")


def test_foreign_io_is_refused(tmp_path):
    from onnxkit import tiny_onnx_classifier

    path = tiny_onnx_classifier(tmp_path / "foreign.onnx")  # input named "input", fixed-name graph
    with pytest.raises(ArtefactError, match=r"foreign\.onnx: 'input' is FLOAT; expected float32 'image'"):
        ox.load_onnx(path)
