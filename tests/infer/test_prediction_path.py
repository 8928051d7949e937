"""What a cold start pays for: `bonedeploy infer` on an ONNX file imports only what predicts.

Each import below costs an edge box time at every start and none of them predicts: training and
export (torch, onnx), plots (matplotlib), scikit-learn and scipy (0.85 s here; the metrics of a
labelled run are numpy, ROC AUC included), and pydantic, which typer >= 0.29 imports to coerce
every option (0.13 s per start here; pyproject keeps typer below it). importlib.metadata (~40 ms)
is left out too: the version is a literal, and only run records that list library versions need it.
"""

import json
import subprocess
import sys

import pytest

from imagekit import png
from onnxkit import tiny_onnx_classifier

NOT_ON_THE_PREDICTION_PATH = ("torch", "torchvision", "onnx", "sklearn", "scipy", "matplotlib",
                              "pydantic", "pandas", "openvino", "tritonclient")
NOT_ON_THE_PREDICTION_PATH_SUBMODULES = ("importlib.metadata",)
PROBE = """
import json, sys
from bonedeploy.cli.app import main
try:
    main(sys.argv[1:])
except SystemExit as e:
    assert not e.code, e.code
print(json.dumps(sorted(sys.modules)))
"""


@pytest.mark.parametrize("inputs", ["one-image", "labelled-one-image", "labelled-folder"])
def test_infer_on_onnx_imports_nothing_that_does_not_predict(tmp_path, inputs, monkeypatch):
    """Labels found (a class folder above the image) add the metrics, which import nothing more:
    not for one image, not for both classes, where ROC AUC is computed too."""
    monkeypatch.setenv("BONEDEPLOY_CACHE_DIR", str(tmp_path / "cache"))
    model = tiny_onnx_classifier(tmp_path / "model.onnx")
    data, out = tmp_path / "data", tmp_path / "p.csv"
    if inputs == "labelled-folder":
        png(data / "Fractured" / "a.png", 200, (40, 40))
        png(data / "Normal" / "b.png", 10, (40, 40))
    else:
        data = png(data / "Fractured" / "one.png" if inputs == "labelled-one-image" else data / "x.png",
                   7, (40, 40))
    run = subprocess.run([sys.executable, "-c", PROBE, "infer", "--engine", str(model), str(data),
                          "--out", str(out), "--backend", "onnxruntime", "-q"],
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    modules = set(json.loads(run.stdout.strip().splitlines()[-1]))
    loaded = {m.split(".")[0] for m in modules}
    assert "onnxruntime" in loaded and "bonedeploy" in loaded  # the probe saw the real run
    assert not set(NOT_ON_THE_PREDICTION_PATH) & loaded
    assert not set(NOT_ON_THE_PREDICTION_PATH_SUBMODULES) & modules
    metrics = out.with_name("p.metrics.json")
    if inputs == "one-image":
        assert not metrics.exists()
    else:  # the metrics were computed in that process, not skipped
        m = json.loads(metrics.read_text())
        assert m["n"] == (2 if inputs == "labelled-folder" else 1)
        assert (m["roc_auc"] is None) == (inputs == "labelled-one-image")
