"""infer with the OOD gate: refused rows have no label and say why, the summary counts them apart,
the exit code says so, --ood off answers everything, old artefacts run and say they have no gate.

The tiny ONNX classifier's ``ood_score`` is 100 |mean - 0.5| (onnxkit), its card's threshold 20:
images with a mean below 0.3 or above 0.7 are refused; every expected row is computable here.
"""

import csv
import json

import numpy as np
import pytest
from PIL import Image

from bonedeploy.artefacts.ood import NO_GATE_NOTE
from bonedeploy.infer.run import EXIT_REFUSED, InferConfig, run_inference
from onnxkit import tiny_card, tiny_ood_card, tiny_onnx_classifier


@pytest.fixture(scope="module")
def gated(tmp_path_factory):
    return tiny_onnx_classifier(tmp_path_factory.mktemp("m") / "gated.onnx", tiny_ood_card(threshold=20.0))


def write(path, level, seed=0):
    path.parent.mkdir(parents=True, exist_ok=True)
    arr = np.clip(np.random.default_rng(seed).normal(level, 6, (40, 44)), 0, 255).astype(np.uint8)
    Image.fromarray(arr).save(path)
    return path


@pytest.fixture
def folder(tmp_path):
    """2 Fractured (mean 0.59), 2 Normal (0.39) radiograph stand-ins; a near-white and a black
    image with labels too (a refused image must not count in the metrics)."""
    root = tmp_path / "imgs"
    for i in range(2):
        write(root / "Fractured" / f"f{i}.png", 150, seed=i)
        write(root / "Normal" / f"n{i}.png", 100, seed=5 + i)
    write(root / "Fractured" / "white.png", 252)
    Image.fromarray(np.zeros((40, 44), np.uint8)).save(root / "Normal" / "black.png")
    (root / "Normal" / "broken.png").write_bytes(b"not a png")
    return root


def run(model, inputs, out, **kw):
    return run_inference(InferConfig(engine=model, inputs=tuple(inputs), out=out, workers=0, batch_size=3, **kw))


def rows(path):
    with open(path, newline="") as fh:
        return {r["path"].rsplit("/", 1)[-1]: r for r in csv.DictReader(fh)}


def test_refused_rows_have_a_score_a_reason_and_no_label(gated, folder, tmp_path):
    res = run(gated, [folder], tmp_path / "p.csv")
    r = rows(tmp_path / "p.csv")
    white, black = r["white.png"], r["black.png"]
    assert white["status"].startswith("rejected: out of distribution (score ") and "> threshold 20)" in white["status"]
    assert float(white["ood_score"]) > 20 and white["predicted"] == "" and white["p_Fractured"] == ""
    assert black["ood_score"] == "50" and black["predicted"] == ""
    for name in ("f0.png", "f1.png", "n0.png", "n1.png"):
        assert r[name]["status"] == "ok" and float(r[name]["ood_score"]) < 20 and r[name]["predicted"]
    assert r["broken.png"]["status"].startswith("error: ") and r["broken.png"]["ood_score"] == ""
    assert (res.ok, len(res.rejected), len(res.errors)) == (4, 2, 1)
    assert res.metrics["n"] == 4 and res.metrics["n_rejected_ood"] == 2 and res.metrics["accuracy"] == 1.0
    assert res.exit_code(max_error_rate=0.5) == EXIT_REFUSED and res.exit_code(0.0) == 3
    record = json.loads((tmp_path / "p.csv.run.json").read_text())
    assert record["ood"]["applied"] and record["ood"]["threshold"] == 20.0 and record["ood"]["switch"] == "on"


def test_ood_off_answers_every_image_and_the_record_says_so(gated, folder, tmp_path):
    res = run(gated, [folder], tmp_path / "p.json", ood="off")
    doc = json.loads((tmp_path / "p.json").read_text())
    by = {r["path"].rsplit("/", 1)[-1]: r for r in doc["rows"]}
    assert by["white.png"]["status"] == "ok" and by["white.png"]["predicted"] == "Fractured"
    assert by["white.png"]["ood_score"] > 20  # still scored, not refused
    assert not res.rejected and res.ok == 6
    record = json.loads((tmp_path / "p.json.run.json").read_text())
    assert record["ood"]["applied"] is False and "--ood off" in record["ood"]["why_not"]
    assert any("--ood off" in n for n in res.notes)


def test_an_artefact_without_a_gate_runs_and_says_so_once(folder, tmp_path):
    old = tiny_onnx_classifier(tmp_path / "old.onnx", tiny_card())
    res = run(old, [folder], tmp_path / "p.csv")
    assert res.notes.count(NO_GATE_NOTE) == 1 and not res.rejected and res.ok == 6
    assert all(r["ood_score"] == "" for r in rows(tmp_path / "p.csv").values())
    assert res.exit_code(max_error_rate=0.5) == 0


def test_resume_keeps_refused_rows(gated, folder, tmp_path):
    out = tmp_path / "p.csv"
    first = run(gated, [folder / "Fractured"], out)
    assert len(first.rejected) == 1
    res = run(gated, [folder], out, resume=True)
    assert res.resumed == 3 and len(res.rejected) == 2
    assert rows(out)["white.png"]["status"].startswith("rejected: ")


def test_a_refused_dicom_gets_a_not_analysed_finding_with_the_reason():
    from bonedeploy.eval.decision import rule_for
    from bonedeploy.infer.dicom_sr import finding_of

    card = tiny_ood_card(threshold=20.0)
    status = card.ood.status(48.0)
    f = finding_of({"path": "x.dcm", "probs": None, "status": status, "ood_score": 48.0}, rule_for(card), card)
    assert f.present is None and f.not_analysed == status and f.ood_score == 48.0
