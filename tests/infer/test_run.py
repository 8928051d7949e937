"""run_inference: one row per image, bad files as error rows, kill + resume, metrics, refusals.

A tiny real ONNX classifier (bonedeploy.testing: brighter image -> Fractured) keeps these fast and
makes every expected probability computable here.
"""

import csv
import json
import os

import numpy as np
import pytest
from PIL import Image

from bonedeploy.errors import ArtefactError, ConfigError, DataError
from bonedeploy.infer.run import InferConfig, run_inference
from bonedeploy.eval.metrics import softmax
from bonedeploy.data.decode import decode_batch
from bonedeploy.ui.progress import Progress
from onnxkit import tiny_card, tiny_logits, tiny_onnx_classifier


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return tiny_onnx_classifier(tmp_path_factory.mktemp("m") / "tiny.onnx")


def write_png(path, level, size=(40, 44), seed=0):
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    arr = np.clip(rng.normal(level, 20, size), 0, 255).astype(np.uint8)
    Image.fromarray(arr).save(path)
    return path


@pytest.fixture
def folder(tmp_path):
    """6 bright Fractured, 6 dark Normal images (the tiny model gets them right)."""
    root = tmp_path / "imgs"
    for i in range(6):
        write_png(root / "Fractured" / f"f{i}.png", 190, seed=i)
        write_png(root / "Normal" / f"n{i}.png", 60, seed=10 + i)
    return root


def cfg(model, inputs, out, **kw):
    kw.setdefault("workers", 0)
    kw.setdefault("batch_size", 4)
    return InferConfig(engine=model, inputs=tuple(inputs), out=out, **kw)


def read_csv(path):
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def expected_probs(path):
    x = tiny_card().preprocess.apply(np.asarray(Image.open(path), np.float32)[..., None] / 255)[None]
    return softmax(tiny_logits(x))[0]


def test_every_image_gets_one_row_in_sorted_order(model, folder, tmp_path):
    result = run_inference(cfg(model, [folder], tmp_path / "p.csv"))
    rows = read_csv(tmp_path / "p.csv")
    paths = [r["path"] for r in rows]
    assert paths == sorted(paths) and len(set(paths)) == 12 == result.total == result.ok
    assert list(rows[0]) == ["path", "predicted", "p_Fractured", "p_Normal", "ood_score", "status", "label"]
    for r in rows:
        p = expected_probs(r["path"])
        assert r["status"] == "ok" and abs(float(r["p_Fractured"]) - p[0]) < 1e-5
        assert r["predicted"] == r["label"] == ("Fractured" if "/Fractured/" in r["path"] else "Normal")
    assert result.exit_code() == 0 and not (tmp_path / "p.csv.partial").exists()


def test_bad_files_get_error_rows_and_the_run_goes_on(model, tmp_path, monkeypatch):
    root = tmp_path / "in"
    write_png(root / "good1.png", 200)
    write_png(root / "good2.png", 50)
    write_png(root / "huge.png", 100, size=(200, 200))
    Image.fromarray(np.full((64, 64), 128, np.uint8)).save(root / "trunc.jpg", quality=90)
    (root / "trunc.jpg").write_bytes((root / "trunc.jpg").read_bytes()[:300])
    (root / "empty.png").write_bytes(b"")
    (root / "text.png").write_text("not an image at all\n")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 10_000)  # inline decoding (workers=0) sees it
    dicom = _dicom_without_decoder(root / "ls.dcm")
    result = run_inference(cfg(model, [root], tmp_path / "p.json"))
    rows = {os.path.basename(r["path"]): r for r in json.loads((tmp_path / "p.json").read_text())["rows"]}
    assert len(rows) == result.total == 6 + bool(dicom)
    assert rows["good1.png"]["status"] == "ok" and rows["good1.png"]["predicted"] == "Fractured"
    assert rows["good2.png"]["predicted"] == "Normal"
    expect = {"empty.png": "empty file", "text.png": "not an image", "trunc.jpg": "truncated",
              "huge.png": "too large", "ls.dcm": "no decoder"}
    for name, cause in expect.items():
        if name in rows:
            assert rows[name]["status"].startswith("error: ") and cause in rows[name]["status"], rows[name]
            assert rows[name]["p_Fractured"] is None and rows[name]["predicted"] is None
    assert result.ok == 2 and len(result.errors) == result.total - 2
    assert result.exit_code(0.0) == 3 and result.exit_code(0.9) == 0


def _dicom_without_decoder(path):
    """A JPEG-LS DICOM, undecodable without pylibjpeg (None when that case cannot be made here)."""
    pydicom = pytest.importorskip("pydicom")
    from pydicom import uid
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.encaps import encapsulate
    from pydicom.pixels import get_decoder

    if get_decoder(uid.JPEGLSLossless).is_available:
        return None
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = uid.JPEGLSLossless
    ds.file_meta.MediaStorageSOPClassUID = uid.DigitalXRayImageStorageForPresentation
    ds.file_meta.MediaStorageSOPInstanceUID = uid.generate_uid()
    ds.SOPClassUID, ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPClassUID, ds.file_meta.MediaStorageSOPInstanceUID
    ds.Rows, ds.Columns, ds.SamplesPerPixel = 8, 8, 1
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.PixelData = encapsulate([bytes(40)])
    ds["PixelData"].VR = "OB"
    ds.save_as(path, enforce_file_format=True)
    assert pydicom
    return path


@pytest.mark.parametrize("workers, pool", [(1, "process"), (2, "thread")])
def test_worker_pools_give_the_same_file_as_inline_decoding(model, folder, tmp_path, workers, pool):
    inline = run_inference(cfg(model, [folder], tmp_path / "inline.csv"))
    pooled = run_inference(cfg(model, [folder], tmp_path / "pool.csv", workers=workers, pool=pool))
    assert (tmp_path / "inline.csv").read_text() == (tmp_path / "pool.csv").read_text()
    # onnxruntime's idle threads must not spin on the cores the decoders need
    assert inline.backend["spinning"] is True and pooled.backend["spinning"] is False


class Killed(Exception):
    pass


class kill_after(Progress):
    """Interrupts the run once ``batches`` batches are written (as Ctrl-C would)."""

    def __init__(self, batches):
        self.batches, self.updates = batches, 0

    def update(self, done, total=None, note=None):
        self.updates += 1
        if self.updates >= self.batches:
            raise Killed


def test_progress_counts_resumed_images_and_notes_errors(model, folder, tmp_path):
    (folder / "Normal" / "broken.png").write_bytes(b"")

    class Record(Progress):
        def __init__(self):
            self.calls = []

        def start(self, description, total=None, done=0):
            self.calls.append(("start", done, total))

        def update(self, done, total=None, note=None):
            self.calls.append(("update", done, note))

    out = tmp_path / "p.csv"
    with pytest.raises(Killed):
        run_inference(cfg(model, [folder], out), progress=kill_after(1))
    seen = Record()
    run_inference(cfg(model, [folder], out, resume=True), progress=seen)
    first_batch = cfg(model, [folder], out).batch_size
    assert seen.calls[0] == ("start", first_batch, 13)  # resumed images are counted as done
    assert seen.calls[-1] == ("update", 13, "1 failed")
    assert [c[1] for c in seen.calls[1:]] == sorted(c[1] for c in seen.calls[1:])


@pytest.mark.parametrize("suffix", [".csv", ".json"])
def test_killed_run_resumed_gives_every_image_exactly_once(model, folder, tmp_path, suffix):
    (folder / "Normal" / "broken.png").write_bytes(b"")
    clean = tmp_path / f"clean{suffix}"
    run_inference(cfg(model, [folder], clean))
    out = tmp_path / f"p{suffix}"
    with pytest.raises(Killed):
        run_inference(cfg(model, [folder], out), progress=kill_after(2))
    partial = tmp_path / f"p{suffix}.partial"
    assert partial.exists() and not out.exists()
    with open(partial, "a") as fh:
        fh.write('imgs/Normal/n9.png,Nor' if suffix == ".csv" else '{"path": "x", "st')  # torn line
    with pytest.raises(ConfigError, match="--resume"):
        run_inference(cfg(model, [folder], out))
    result = run_inference(cfg(model, [folder], out, resume=True))
    assert result.resumed == 8 and result.processed == 5 and result.total == 13
    if suffix == ".csv":
        assert out.read_text() == clean.read_text()
    else:
        assert json.loads(out.read_text())["rows"] == json.loads(clean.read_text())["rows"]
    again = run_inference(cfg(model, [folder], out, resume=True))  # nothing left to do
    assert again.processed == 0 and again.resumed == 13 and len(again.errors) == 1


def test_an_older_finished_file_never_leaks_into_a_resumed_fresh_run(model, folder, tmp_path):
    out = tmp_path / "p.csv"
    run_inference(cfg(model, [folder], out))
    clean = out.read_text()
    stale = clean.replace("ok", "error: from an older model")  # what an earlier run left
    out.write_text(stale)
    with pytest.raises(Killed):
        run_inference(cfg(model, [folder], out), progress=kill_after(1))
    assert out.read_text() == stale  # kept until the new run replaces it
    run_inference(cfg(model, [folder], out, resume=True))
    assert out.read_text() == clean


def test_metrics_from_class_folders_and_threshold(model, folder, tmp_path):
    (folder / "Normal" / "n0.png").unlink()
    write_png(folder / "Normal" / "n0.png", 160, seed=3)  # a Normal the model calls Fractured
    result = run_inference(cfg(model, [folder], tmp_path / "run.csv"))
    m = json.loads((tmp_path / "run.metrics.json").read_text())
    assert result.metrics_path == tmp_path / "run.metrics.json"
    assert m["n"] == 12 and m["correct"] == 11 and m["confusion_matrix"] == [[6, 0], [1, 5]]
    assert m["sensitivity"] == 1.0 and m["specificity"] == pytest.approx(5 / 6)
    lo, hi = m["accuracy_ci95"]
    assert lo < 11 / 12 < hi and m["roc_auc"] is not None and "f1" in m
    strict = run_inference(cfg(model, [folder], tmp_path / "strict.csv", threshold=0.9999))
    assert strict.metrics["sensitivity"] < 1.0 and strict.metrics["threshold"] == 0.9999
    assert {r["predicted"] for r in read_csv(tmp_path / "strict.csv")} == {"Normal"}


def test_labels_csv_in_synth_layout(model, tmp_path):
    """synth writes test_answers.csv beside test/ with paths relative to test/."""
    root = tmp_path / "synth"
    write_png(root / "test" / "a.png", 200)
    write_png(root / "test" / "b.png", 40)
    write_png(root / "test" / "c.png", 40)
    (root / "test_answers.csv").write_text("path,label\na.png,Fractured\nb.png,normal\n")
    result = run_inference(cfg(model, [root / "test"], tmp_path / "p.csv", labels=root / "test_answers.csv"))
    assert result.metrics["n"] == 2 and result.metrics["accuracy"] == 1.0
    assert result.metrics["n_unlabelled"] == 1
    assert [r["label"] for r in read_csv(tmp_path / "p.csv")] == ["Fractured", "Normal", ""]
    (root / "bad.csv").write_text("path,label\na.png,Broken\n")
    with pytest.raises(ConfigError, match="valid: Fractured, Normal"):
        run_inference(cfg(model, [root / "test"], tmp_path / "q.csv", labels=root / "bad.csv"))


def test_unlabelled_inputs_have_no_label_column_and_no_metrics(model, tmp_path):
    write_png(tmp_path / "in" / "a.png", 200)
    result = run_inference(cfg(model, [tmp_path / "in" / "a.png"], tmp_path / "p.csv"))
    assert "label" not in read_csv(tmp_path / "p.csv")[0] and result.metrics is None
    assert not (tmp_path / "p.metrics.json").exists()


@pytest.mark.parametrize("card, graph, match", [
    (tiny_card(channels=3), None, "wrong engine for radiographs: its model takes 3-channel"),
    (tiny_card(), (None, 1, 64, 64), r"takes \(1, 64, 64\) per image but its model card says \(1, 32, 32\)"),
])
def test_wrong_engine_is_refused_before_any_image_is_read(folder, tmp_path, monkeypatch, card, graph, match):
    path = tiny_onnx_classifier(tmp_path / "wrong.onnx", card, graph_shape=graph and ("n", *graph[1:]))
    import bonedeploy.data.imageio

    monkeypatch.setattr(bonedeploy.data.imageio, "read_image", lambda p: pytest.fail("an image was read"))
    with pytest.raises(ArtefactError, match=match):
        run_inference(cfg(path, [folder], tmp_path / "p.csv"))
    assert not (tmp_path / "p.csv.partial").exists()


def test_run_failures_are_errors_with_exit_code_1(model, folder, tmp_path):
    (tmp_path / "empty").mkdir()
    cases = [
        (cfg(tmp_path / "missing.onnx", [folder], tmp_path / "p.csv"), ArtefactError, "engine not found"),
        (cfg(model, [tmp_path / "empty"], tmp_path / "p.csv"), DataError, "no images"),
        (cfg(model, [tmp_path / "nope"], tmp_path / "p.csv"), DataError, "input not found"),
        (cfg(model, [folder], tmp_path / "p.xlsx"), ConfigError, r"valid suffixes: \.csv, \.json"),
        (cfg(model, [folder], tmp_path / "p.csv", precision="fp16"), ConfigError, "torch backend"),
        (cfg(model, [folder], tmp_path / "p.csv", batch_size=0), ConfigError, "batch-size"),
    ]
    for config, error, match in cases:
        with pytest.raises(error, match=match) as info:
            run_inference(config)
        assert info.value.exit_code == 1


def crashing_decode(paths, spec):
    """Stands in for a decoder that kills its worker process on one file."""
    if any(p.name == "crash.png" for p in paths):
        os._exit(13)
    return decode_batch(paths, spec)


@pytest.mark.slow
def test_a_decoder_crash_costs_one_error_row(model, folder, tmp_path, monkeypatch):
    import bonedeploy.data.decode

    write_png(folder / "Normal" / "crash.png", 50)
    monkeypatch.setattr(bonedeploy.data.decode, "decode_batch", crashing_decode)
    result = run_inference(cfg(model, [folder], tmp_path / "p.csv", workers=1, pool="process"))
    rows = read_csv(tmp_path / "p.csv")
    assert len(rows) == 13 and result.ok == 12
    assert [r["status"] for r in rows if r["path"].endswith("crash.png")] == [
        "error: the decoder process crashed on this file"]


KILLABLE = """
import sys, time
from pathlib import Path
from bonedeploy.infer.run import InferConfig, run_inference
from bonedeploy.ui.progress import Progress

class Slow(Progress):
    def update(self, done, total=None, note=None):
        time.sleep(0.2)

cfg = InferConfig(engine=Path(sys.argv[1]), inputs=(Path(sys.argv[2]),), out=Path(sys.argv[3]),
                  batch_size=2, workers=0)
run_inference(cfg, progress=Slow())
"""


@pytest.mark.slow
def test_sigkill_mid_run_then_resume_gives_every_image_exactly_once(model, folder, tmp_path):
    """A real kill -9 (no cleanup, no finally): the fsync'd partial is all that survives."""
    import signal
    import subprocess
    import sys
    import time

    out = tmp_path / "p.csv"
    partial = tmp_path / "p.csv.partial"
    proc = subprocess.Popen([sys.executable, "-c", KILLABLE, str(model), str(folder), str(out)])
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and (not partial.exists() or len(partial.read_text().splitlines()) < 5):
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not out.exists(), "the run finished before it could be killed"
    kept = len(partial.read_text().splitlines()) - 1
    assert 4 <= kept < 12
    result = run_inference(cfg(model, [folder], out, resume=True))
    assert result.resumed == kept and result.processed == 12 - kept
    paths = [r["path"] for r in read_csv(out)]
    assert len(paths) == len(set(paths)) == 12 and not partial.exists()


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_checkpoint_and_its_onnx_give_the_same_rows(tmp_path):
    """The same vgg8 as best.pt (torch backend) and model.onnx (onnxruntime backend)."""
    torch = pytest.importorskip("torch")
    import onnx

    from bonedeploy.artefacts.card import ModelCard
    from bonedeploy.artefacts.checkpoint import save_checkpoint
    from bonedeploy.models import create_model

    torch.manual_seed(0)
    net, card = create_model("vgg8").eval(), ModelCard(model="vgg8")
    save_checkpoint(tmp_path / "best.pt", {"card": card.to_dict(), "model_kwargs": {}, "state_dict": net.state_dict()})
    torch.onnx.export(net, torch.zeros(1, 1, 400, 400), tmp_path / "model.onnx", input_names=["input"],
                      dynamic_axes={"input": {0: "batch"}}, opset_version=17, dynamo=False)
    proto = onnx.load(tmp_path / "model.onnx")
    onnx.helper.set_model_props(proto, card.to_props())
    onnx.save(proto, tmp_path / "model.onnx")
    for i in range(3):
        write_png(tmp_path / "in" / f"{i}.png", 80 + 40 * i, size=(420, 390), seed=i)
    a = run_inference(cfg(tmp_path / "best.pt", [tmp_path / "in"], tmp_path / "pt.csv", batch_size=2))
    b = run_inference(cfg(tmp_path / "model.onnx", [tmp_path / "in"], tmp_path / "onnx.csv", batch_size=2))
    assert a.backend["backend"] == "torch" and b.backend["backend"] == "onnxruntime"
    for ra, rb in zip(read_csv(tmp_path / "pt.csv"), read_csv(tmp_path / "onnx.csv"), strict=True):
        assert ra["path"] == rb["path"] and ra["status"] == rb["status"] == "ok"
        assert abs(float(ra["p_Fractured"]) - float(rb["p_Fractured"])) < 1e-4


def test_resume_with_another_engine_is_refused_before_any_row_changes(model, folder, tmp_path):
    out = tmp_path / "preds.csv"
    run_inference(cfg(model, [folder], out))
    before = out.read_bytes()
    other = tiny_onnx_classifier(tmp_path / "other.onnx", gain=2.0)
    with pytest.raises(ConfigError, match="resume with the same engine"):
        run_inference(cfg(other, [folder], out, resume=True))
    assert out.read_bytes() == before
    # the same engine resumes (nothing left to do) and a fresh run may switch engines
    assert run_inference(cfg(model, [folder], out, resume=True)).processed == 0
    assert run_inference(cfg(other, [folder], out)).processed == 12
    assert json.loads((tmp_path / "preds.csv.run.json").read_text())["engine"] == str(other)


@pytest.mark.parametrize("images, given, expected", [(1, None, False), (2, None, None), (1, True, True)])
def test_one_image_opens_onnxruntime_without_weight_prepacking(model, tmp_path, monkeypatch, images, given,
                                                               expected):
    """One model call: the session that opens sooner wins (prepack off), unless the user says."""
    from bonedeploy.backends.onnxrt import OnnxRuntimeBackend

    seen = []
    real = OnnxRuntimeBackend._open
    monkeypatch.setattr(OnnxRuntimeBackend, "_open", lambda self: seen.append(self.prepack) or real(self))
    paths = [write_png(tmp_path / "in" / f"{i}.png", 190, seed=i) for i in range(images)]
    options = {} if given is None else {"backend_settings": (("prepack", str(given).lower()),)}
    res = run_inference(cfg(model, paths, tmp_path / "p.csv", **options))
    assert seen == [expected] and res.processed == images
    rows = read_csv(tmp_path / "p.csv")
    np.testing.assert_allclose(float(rows[0]["p_Fractured"]), expected_probs(paths[0])[0], atol=1e-5)
