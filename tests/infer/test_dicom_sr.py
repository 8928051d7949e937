"""``infer --dicom-sr``: one report per DICOM input, saying what the predictions file says."""

import csv

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("highdicom")
pydicom = pytest.importorskip("pydicom", minversion="3.0")

from bonedeploy.artefacts.card import ModelCard  # noqa: E402
from bonedeploy.artefacts.dicom_sr import read_finding  # noqa: E402
from bonedeploy.artefacts.operating_point import OperatingPoint  # noqa: E402
from bonedeploy.data.synth.dicom import encode_dicom  # noqa: E402
from bonedeploy.infer.dicom_sr import report_path  # noqa: E402
from bonedeploy.infer.run import InferConfig, run_inference  # noqa: E402
from onnxkit import tiny_card, tiny_onnx_classifier  # noqa: E402


def write_dicoms(root, levels):
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    paths = []
    for i, level in enumerate(levels):
        image = np.clip(rng.normal(level, 0.05, (40, 44)), 0, 1)
        (root / f"i{i}.dcm").write_bytes(encode_dicom(image, seed=1, index=i))
        paths.append(root / f"i{i}.dcm")
    return paths


def test_reports_match_the_predictions(tmp_path):
    op = OperatingPoint(positive_class="Fractured", threshold=0.6, target_sensitivity=0.9)
    card: ModelCard = tiny_card().with_(operating_point=op)
    model = tiny_onnx_classifier(tmp_path / "tiny.onnx", card)
    paths = write_dicoms(tmp_path / "in", [0.2, 0.55, 0.8, 0.3])
    flat = tmp_path / "in" / "flat.dcm"  # decodes to a constant: refused, reported as such
    flat.write_bytes(encode_dicom(np.zeros((40, 44)), seed=1, index=9))
    Image.fromarray(np.full((40, 44), 200, np.uint8)).save(tmp_path / "in" / "photo.png")
    out = tmp_path / "preds.csv"
    result = run_inference(InferConfig(engine=model, inputs=(tmp_path / "in",), out=out, workers=0,
                                       dicom_sr=tmp_path / "sr"))
    assert result.reports == 5 and any("1 inputs are not DICOM" in n for n in result.notes)
    rows = {r["path"]: r for r in csv.DictReader(out.open())}
    for path in [*paths, flat]:
        ds = pydicom.dcmread(path, stop_before_pixels=True)
        finding, sources = read_finding(report_path(tmp_path / "sr", ds.SOPInstanceUID))
        assert sources == [ds.SOPInstanceUID]
        row = rows[str(path)]
        if path == flat:
            assert finding.present is None and "one constant value" in finding.not_analysed
            assert row["status"].startswith("error: ") and finding.not_analysed in row["status"]
            continue
        assert finding.present == (row["predicted"] == "Fractured")
        assert finding.probability == pytest.approx(float(row["p_Fractured"]), abs=1e-6)
        assert (finding.threshold, finding.target_sensitivity) == (0.6, 0.9)
    assert {f.present for f in (read_finding(p)[0] for p in (tmp_path / "sr").iterdir())} == {True, False, None}
