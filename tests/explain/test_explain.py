"""Grad-CAM: pytorch-grad-cam on the .pt and the in-graph map of model.explain.onnx agree
within 1e-3; explain writes maps and labelled overlays, and goes on past unreadable files."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("onnx")
pytest.importorskip("pytorch_grad_cam", reason="the [explain] extra (grad-cam) is not installed")

from camkit import make_cam_checkpoint, make_images, register_tiny_alexnet  # noqa: E402

from bonedeploy.errors import ArtefactError, ConfigError  # noqa: E402
from bonedeploy.artefacts.operating_point import OperatingPoint  # noqa: E402


@pytest.fixture(scope="module")
def artefacts(tmp_path_factory):
    from bonedeploy.export.explain_onnx import export_explain

    root = tmp_path_factory.mktemp("cam")
    op = OperatingPoint("Fractured", threshold=0.5003, target_sensitivity=0.9)
    ckpt = make_cam_checkpoint(root / "best.pt", operating_point=op, temperature=1.5)
    onnx_path = export_explain(ckpt, root / "model.explain.onnx")
    return ckpt, onnx_path, make_images(root / "imgs")


def _batch(images: Path) -> np.ndarray:
    from bonedeploy.data.imageio import load_preprocessed
    from bonedeploy.data.preprocess import PreprocessSpec

    spec = PreprocessSpec(crop_size=64)
    return np.stack([load_preprocessed(p, spec) for p in sorted(images.glob("*.png"))]).astype(np.float32)


def test_default_layer_is_the_last_conv_block():
    from bonedeploy.explain.layers import default_layer
    from bonedeploy.models import create_model

    assert default_layer("alexnet", create_model(register_tiny_alexnet())) == "5"
    assert default_layer("alexnet", create_model("alexnet_d08_wd1e-3")) == "14"
    with pytest.raises(ConfigError, match="families"):
        default_layer("nosuch", None)


def test_in_graph_maps_equal_pytorch_grad_cam_within_1e_3(artefacts):
    import onnxruntime as ort

    from bonedeploy.artefacts.checkpoint import load_checkpoint, model_from_checkpoint
    from bonedeploy.explain.gradcam import torch_cams

    ckpt, onnx_path, images = artefacts
    x = _batch(images)
    model = model_from_checkpoint(load_checkpoint(ckpt))
    sess = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    logits, cams = sess.run(None, {"image": x})
    assert cams.shape == (len(x), 2, 64, 64) and cams.dtype == np.float32
    with torch.no_grad():
        assert np.abs(logits - model(torch.from_numpy(x)).numpy()).max() < 1e-4
    for c in (0, 1):
        ref = torch_cams(model, x, model.get_submodule("5"), [c] * len(x))
        assert ref.shape == (len(x), 64, 64)
        assert np.abs(cams[:, c] - ref).max() < 1e-3, c
        assert np.ptp(ref.reshape(len(x), -1), axis=1).min() > 0.5  # real maps, not constants


def test_explain_from_pt_and_onnx_writes_maps_and_overlays(artefacts, tmp_path):
    from PIL import Image

    from bonedeploy.explain.run import ExplainConfig, explain

    ckpt, onnx_path, images = artefacts
    bad = images.parent / "bad"
    bad.mkdir(exist_ok=True)
    (bad / "zzz.png").write_bytes(b"not an image")
    inputs = (images, bad / "zzz.png")
    res = {}
    for name, engine in (("pt", ckpt), ("onnx", onnx_path)):
        r = explain(ExplainConfig(engine, inputs, tmp_path / name))
        assert len(r.written) == 6 and [Path(p).name for p, _ in r.errors] == ["zzz.png"]
        assert r.decision["threshold"] == 0.5003 and r.decision["threshold_source"] == "operating point"
        for w in r.written:
            m = np.load(w["npy"])
            assert m.dtype == np.float32 and m.shape == (64, 64) and 0 <= m.min() and m.max() <= 1
            img = Image.open(w["png"])
            assert img.size == (64, 64 + 22)
            assert w["decision"] == ("Fractured" if w["p"] >= 0.5003 else "Normal")
        res[name] = r
    for a, b in zip(res["pt"].written, res["onnx"].written):
        assert a["decision"] == b["decision"] and a["target"] == b["target"]
        assert np.abs(np.load(a["npy"]) - np.load(b["npy"])).max() < 1e-3


def test_target_class_and_layer_validation(artefacts, tmp_path):
    from bonedeploy.explain.run import ExplainConfig, explain

    ckpt, onnx_path, images = artefacts
    r = explain(ExplainConfig(ckpt, (images,), tmp_path / "n", target="Normal"))
    assert {w["target"] for w in r.written} == {"Normal"}
    with pytest.raises(ConfigError, match="valid: predicted, Fractured, Normal"):
        explain(ExplainConfig(ckpt, (images,), tmp_path / "x", target="Broken"))
    with pytest.raises(ConfigError, match="--layer"):
        explain(ExplainConfig(ckpt, (images,), tmp_path / "x", layer="nosuch"))
    with pytest.raises(ConfigError, match="fixed at export"):
        explain(ExplainConfig(onnx_path, (images,), tmp_path / "x", layer="2"))


def test_explainers_wrap_the_backend_of_their_artefact(artefacts):
    """The ONNX explainer opens its session and reads its card through the onnxruntime backend,
    the .pt one through the torch backend; a refused layer leaves the backend closed."""
    from bonedeploy.backends.onnxrt import OnnxRuntimeBackend
    from bonedeploy.backends.torch import TorchBackend
    from bonedeploy.explain.run import explainer_for

    ckpt, onnx_path, _ = artefacts
    for path, cls in ((onnx_path, OnnxRuntimeBackend), (ckpt, TorchBackend)):
        e = explainer_for(path)
        assert type(e.backend) is cls and not e.backend.loaded
        with e:
            assert e.backend.loaded and e.card is e.backend.card and e.layer == "5"
            assert e.load() is e and e.backend.loaded  # idempotent
        assert not e.backend.loaded
    e = explainer_for(onnx_path, layer="2")
    with pytest.raises(ConfigError, match="fixed at export"):
        e.load()
    assert not e.backend.loaded


def test_plain_onnx_and_other_families_get_a_clear_error(artefacts, tmp_path):
    from onnxkit import tiny_onnx_classifier

    from bonedeploy.explain.run import ExplainConfig, explain
    from bonedeploy.export.explain_onnx import cam_module

    _, _, images = artefacts
    plain = tiny_onnx_classifier(tmp_path / "model.onnx")
    with pytest.raises(ConfigError, match="explain.onnx"):
        explain(ExplainConfig(plain, (images,), tmp_path / "o"))
    renamed = tmp_path / "fake.explain.onnx"
    renamed.write_bytes(plain.read_bytes())
    with pytest.raises(ArtefactError, match="no 'cam' output"):
        explain(ExplainConfig(renamed, (images,), tmp_path / "o"))
    with pytest.raises(ConfigError, match="no in-graph Grad-CAM for the 'resnet' family"):
        cam_module("resnet", None, "layers", (400, 400))


def test_the_explain_onnx_path_runs_without_torch(artefacts, tmp_path):
    _, onnx_path, images = artefacts
    code = ("import sys; sys.modules['torch'] = None; sys.modules['onnx'] = None\n"
            "from bonedeploy.cli.app import main\n"
            f"main(['explain', {str(onnx_path)!r}, {str(images)!r}, '--out', {str(tmp_path / 'e')!r}])\n")
    root = Path(__file__).resolve().parents[2]
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                       cwd=root, env={"PYTHONPATH": str(root), "PATH": "/usr/bin:/bin"})
    assert r.returncode == 0, r.stderr
    assert len(list((tmp_path / "e").glob("*.npy"))) == 6


def test_infer_explain_maps_the_positive_decisions_in_the_same_pass(artefacts, tmp_path):
    import csv

    from bonedeploy.infer.run import InferConfig, run_inference

    ckpt, onnx_path, images = artefacts
    run_inference(InferConfig(engine=ckpt, inputs=(images,), out=tmp_path / "first.csv", workers=0))
    median = float(np.median([float(row["p_Fractured"]) for row in csv.DictReader(open(tmp_path / "first.csv"))]))
    out = tmp_path / "p.csv"
    r = run_inference(InferConfig(engine=ckpt, inputs=(images,), out=out, workers=0, explain=tmp_path / "x",
                                  threshold=median))
    rows = list(csv.DictReader(open(out)))
    positive = {Path(row["path"]).stem for row in rows if row["predicted"] == "Fractured"}
    assert 0 < len(positive) < len(rows)  # both decisions at the median
    assert {p.stem for p in (tmp_path / "x").glob("*.npy")} == positive == {p.stem for p in (tmp_path / "x").glob("*.png")}
    assert r.explained == len(positive)
    # --explain-all, with the plain ONNX engine explained by the model.explain.onnx beside it
    r = run_inference(InferConfig(engine=onnx_path, inputs=(images,), out=tmp_path / "q.csv", workers=0,
                                  explain=tmp_path / "all", explain_all=True))
    assert r.explained == len(rows) == len(list((tmp_path / "all").glob("*.npy")))


def test_export_explain_and_explain_cli(tmp_path, capsys):
    from exportkit import make_tree

    from bonedeploy.cli.app import main

    ckpt = make_cam_checkpoint(tmp_path / "run" / "best.pt", seed=3)
    tree = make_tree(tmp_path / "data", per_class=4, size=(72, 72))
    with pytest.raises(SystemExit) as e:
        main(["export", str(ckpt), "--precision", "fp32", "--no-trt", "--data", str(tree), "--explain", "-q"])
    assert e.value.code in (0, None), capsys.readouterr()
    graph = tmp_path / "run" / "model.explain.onnx"
    assert graph.is_file() and (tmp_path / "run" / "model.onnx").is_file()
    (tree / "Normal" / "broken.png").write_bytes(b"\x89PNG broken")
    with pytest.raises(SystemExit) as e:
        main(["explain", str(graph), str(tree), "--out", str(tmp_path / "maps"), "--target", "Fractured"])
    out = capsys.readouterr().out
    assert e.value.code == 3 and "broken.png" in out  # reported; the other 8 images still written
    assert len(list((tmp_path / "maps").glob("*.npy"))) == 8 == len(list((tmp_path / "maps").glob("*.png")))
