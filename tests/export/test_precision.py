"""fp16 and int8 QDQ variants: types, IO kept float32, metadata, calibration sources and errors."""


import numpy as np
import pytest

from exportkit import make_checkpoint, make_tree, register_tiny  # noqa: E402

onnx = pytest.importorskip("onnx")
torch = pytest.importorskip("torch")
ort = pytest.importorskip("onnxruntime")
pytest.importorskip("onnxconverter_common")

from bonedeploy.artefacts.card import ModelCard  # noqa: E402
from bonedeploy.artefacts.checkpoint import load_checkpoint  # noqa: E402
from bonedeploy.errors import DataError  # noqa: E402
from bonedeploy.export import onnx as ox  # noqa: E402
from bonedeploy.export import precision as prec  # noqa: E402
from bonedeploy.models import create_model  # noqa: E402
from bonedeploy.data.preprocess import PreprocessSpec  # noqa: E402

SPEC = PreprocessSpec(crop_size=32)


def run(proto, x):
    sess = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    return sess.run(None, {"image": x})[0]


@pytest.fixture(scope="module")
def tiny_fp32(tmp_path_factory):
    register_tiny()
    torch.manual_seed(0)
    model = create_model("tiny_test").eval()
    proto = ox.export_fp32(model, ModelCard(model="tiny_test", preprocess=SPEC, source_sha256="cd" * 32))
    path = ox.save_onnx(proto, tmp_path_factory.mktemp("fp32") / "model.onnx")
    return model, proto, path


@pytest.fixture(scope="module")
def calib_tree(tmp_path_factory):
    return make_tree(tmp_path_factory.mktemp("calib") / "data", per_class=20)


def elem_types(proto):
    return {i.data_type for i in proto.graph.initializer}


def test_fp16_keeps_float32_io_and_stays_close(tiny_fp32):
    model, fp32, _ = tiny_fp32
    fp16 = prec.to_fp16(fp32, ox.read_card(fp32))
    ox.check_onnx(fp16, "model.fp16.onnx")
    assert onnx.TensorProto.FLOAT16 in elem_types(fp16)
    assert fp16.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    assert fp16.graph.output[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    card = ox.read_card(fp16)
    assert card.precision == "fp16" and card.source_sha256 == "cd" * 32
    x = np.random.default_rng(0).random((5, 1, 32, 32), dtype=np.float32)
    np.testing.assert_allclose(run(fp16, x), run(fp32, x), atol=2e-2)
    assert ox.read_card(fp32).precision == "fp32"  # the source proto is not modified
    assert prec.to_fp16(fp32, ox.read_card(fp32)).SerializeToString() == fp16.SerializeToString()


def test_int8_is_qdq_per_channel_symmetric_with_calibration_in_metadata(tiny_fp32, calib_tree):
    _, fp32, path = tiny_fp32
    calib = prec.calibration_set(None, calib_tree, SPEC)
    assert len(calib.files) == 40 and calib.source == "--calib folder"
    int8 = prec.to_int8(path, ox.read_card(fp32), calib)
    ox.check_onnx(int8, "model.int8.onnx")
    ops = [n.op_type for n in int8.graph.node]
    assert {"QuantizeLinear", "DequantizeLinear", "Conv", "Gemm"} <= set(ops)
    inits = {i.name: onnx.numpy_helper.to_array(i) for i in int8.graph.initializer}
    conv = next(n for n in int8.graph.node if n.op_type == "Conv")
    w_dq = next(n for n in int8.graph.node if n.op_type == "DequantizeLinear" and n.output[0] == conv.input[1])
    assert inits[w_dq.input[0]].dtype == np.int8 and inits[w_dq.input[1]].shape == (4,)  # per output channel
    zero_points = [inits[n.input[2]] for n in int8.graph.node
                   if n.op_type in ("QuantizeLinear", "DequantizeLinear") and len(n.input) > 2]
    assert zero_points and all(z.dtype == np.int8 and not z.any() for z in zero_points)  # symmetric
    dq_inputs = {inits[n.input[0]].dtype for n in int8.graph.node
                 if n.op_type == "DequantizeLinear" and n.input[0] in inits}
    assert dq_inputs == {np.dtype(np.int8)}  # no int32 bias DQ: TensorRT's parser rejects it
    assert {o.domain for o in int8.opset_import} <= {"", "ai.onnx"}  # no ORT-internal domains
    card = ox.read_card(int8)
    assert card.precision == "int8"
    meta = card.extra["calibration"]
    assert meta["n"] == 40 and meta["sha256"] == calib.sha256 and meta["files"][0] == "Fractured/F000.png"
    x = np.random.default_rng(0).random((3, 1, 32, 32), dtype=np.float32)
    assert np.abs(run(int8, x) - run(fp32, x)).max() < 0.5
    again = prec.to_int8(path, ox.read_card(fp32), calib)
    assert again.SerializeToString() == int8.SerializeToString()  # same images -> same bytes


def test_calibration_defaults_to_the_checkpoint_train_split(tmp_path, calib_tree):
    ckpt = load_checkpoint(make_checkpoint(tmp_path / "best.pt", data_root=calib_tree))
    calib = prec.calibration_set(ckpt, None, SPEC)
    assert calib.source == "checkpoint train split" and len(calib.files) == 32
    val = {e["path"] for e in ckpt["split"]["val"]}
    assert not val & set(calib.files)  # never calibrates on validation images
    assert calib.x.shape == (32, 1, 32, 32) and calib.x.dtype == np.float32
    capped = prec.calibration_set(ckpt, None, SPEC, n_max=16)
    assert len(capped.files) == 16 and {f.split("/")[0] for f in capped.files} == {"Fractured", "Normal"}


def test_calibration_hash_covers_names_and_contents(tmp_path):
    root = make_tree(tmp_path / "c", per_class=16)
    first = prec.calibration_set(None, root, SPEC).sha256
    assert prec.calibration_set(None, root, SPEC).sha256 == first
    make_tree(tmp_path / "c", per_class=16, seed=5)  # same names, new pixels
    assert prec.calibration_set(None, root, SPEC).sha256 != first


def test_int8_without_calibration_images_is_a_clear_error(tmp_path):
    with pytest.raises(DataError, match="records no train split; pass --calib DIR"):
        prec.calibration_set({"card": {}}, None, SPEC, where="best.pt")
    ckpt = {"split": {"root": str(tmp_path / "gone"), "train": [{"path": "a.png", "label": 0}]}}
    with pytest.raises(DataError, match=r"train folder .*gone does not exist here; pass --calib DIR"):
        prec.calibration_set(ckpt, None, SPEC, where="best.pt")
    few = make_tree(tmp_path / "few", per_class=5)
    with pytest.raises(DataError, match="needs at least 32 images, found 10"):
        prec.calibration_set(None, few, SPEC)
    with pytest.raises(DataError, match="--calib folder does not exist"):
        prec.calibration_set(None, tmp_path / "nope", SPEC)
