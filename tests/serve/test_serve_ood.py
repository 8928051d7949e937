"""The OOD gate behind Triton: ``NAME`` returns ``ood_score`` beside ``probs``, ``NAME_file`` refuses
what infer refuses (same status, no label), remote infer writes the rows local infer writes; the
exported repository declares the output. One real tritonserver, bounded in time, always stopped."""

from __future__ import annotations

import csv
import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from bonedeploy.infer.run import InferConfig, run_inference
from onnxkit import tiny_ood_card, tiny_ood_scores, tiny_onnx_classifier

pytest.importorskip("pytriton", reason="needs the [serve] extra (nvidia-pytriton)")
grpcclient = pytest.importorskip("tritonclient.grpc", reason="needs the [serve] extra (tritonclient[grpc])")

from bonedeploy.serve.process import ServerProcess  # noqa: E402

pytestmark = pytest.mark.timeout(300)


def png_bytes(level: int, size: int = 40) -> bytes:
    buf = io.BytesIO()
    rng = np.random.default_rng(level)
    Image.fromarray(np.clip(rng.normal(level, 5, (size, size)), 0, 255).astype(np.uint8)).save(buf, "PNG")
    return buf.getvalue()


@pytest.fixture(scope="module")
def engine(tmp_path_factory) -> Path:
    return tiny_onnx_classifier(tmp_path_factory.mktemp("engine") / "gated.onnx", tiny_ood_card(threshold=20.0))


@pytest.fixture(scope="module")
def server(engine):
    srv = ServerProcess(engine, extra=["--max-batch", "8"])
    try:
        yield srv.start()
    finally:
        srv.stop()


def test_tensors_get_the_score_beside_the_probabilities(server):
    c = grpcclient.InferenceServerClient(server.grpc)
    x = np.stack([np.full((1, 32, 32), v, np.float32) for v in (0.55, 0.98)])
    inp = grpcclient.InferInput("image", list(x.shape), "FP32")
    inp.set_data_from_numpy(x)
    r = c.infer("bonedeploy", [inp])
    np.testing.assert_allclose(r.as_numpy("ood_score").reshape(-1), tiny_ood_scores(x), atol=1e-3)
    assert r.as_numpy("probs").shape == (2, 2)


def test_files_get_infers_status_and_no_label_when_refused(server):
    c = grpcclient.InferenceServerClient(server.grpc)
    arr = np.array([[png_bytes(150)], [png_bytes(252)]], dtype=object)
    inp = grpcclient.InferInput("file", list(arr.shape), "BYTES")
    inp.set_data_from_numpy(arr)
    r = c.infer("bonedeploy_file", [inp])
    status = [v.decode() for v in r.as_numpy("status").reshape(-1)]
    labels = [v.decode() for v in r.as_numpy("label").reshape(-1)]
    assert status[0] == "ok" and labels[0] == "Fractured"
    assert status[1].startswith("rejected: out of distribution (score ") and labels[1] == ""
    assert r.as_numpy("ood_score").reshape(-1)[1] > 20


@pytest.mark.parametrize("remote_decode", [False, True])
def test_remote_infer_writes_the_rows_local_infer_writes(server, engine, tmp_path, remote_decode):
    folder = tmp_path / "imgs"
    folder.mkdir()
    for lv in (110, 150, 252, 3):
        (folder / f"g{lv}.png").write_bytes(png_bytes(lv))
    read = lambda p: {Path(r["path"]).name: r for r in csv.DictReader(p.open())}  # noqa: E731
    local = run_inference(InferConfig(engine=engine, inputs=(folder,), out=tmp_path / "l.csv", workers=0))
    remote = run_inference(InferConfig(engine=f"grpc://{server.grpc}/bonedeploy", inputs=(folder,),
                                       out=tmp_path / "r.csv", workers=0, remote_decode=remote_decode))
    a, b = read(tmp_path / "l.csv"), read(tmp_path / "r.csv")
    assert len(local.rejected) == len(remote.rejected) == 2
    for name in a:
        assert a[name]["status"] == b[name]["status"] and a[name]["predicted"] == b[name]["predicted"]
        assert float(a[name]["ood_score"]) == pytest.approx(float(b[name]["ood_score"]), rel=1e-4)


def test_the_exported_repository_declares_the_score(tmp_path, engine):
    pb = pytest.importorskip("tritonclient.grpc.model_config_pb2")
    from google.protobuf import text_format

    from bonedeploy.export.triton_repo import write_triton_repo

    res = write_triton_repo(engine, tmp_path / "repo", name="elbow")
    cfg = text_format.Parse(res.config_path.read_text(), pb.ModelConfig())
    outs = {o.name: o for o in cfg.output}
    assert list(outs) == ["logits", "ood_score"]
    assert list(outs["ood_score"].dims) == [1] and list(outs["ood_score"].reshape.shape) == []
