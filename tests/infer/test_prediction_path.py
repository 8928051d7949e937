"""What a cold start pays for: `bonedeploy infer` on an ONNX file imports only what predicts.

Each import below costs an edge box time at every start and none of them predicts: training and
export (torch, onnx), metrics and plots (scikit-learn, scipy, matplotlib), and pydantic, which
typer >= 0.29 imports to coerce every option (0.13 s per start here; pyproject keeps typer below it).
"""

import json
import subprocess
import sys

import pytest

from imagekit import png
from onnxkit import tiny_onnx_classifier

NOT_ON_THE_PREDICTION_PATH = ("torch", "torchvision", "onnx", "sklearn", "scipy", "matplotlib",
                              "pydantic", "pandas", "openvino", "tritonclient")
PROBE = """
import json, sys
from bonedeploy.cli.app import main
try:
    main(sys.argv[1:])
except SystemExit as e:
    assert not e.code, e.code
print(json.dumps(sorted({m.split('.')[0] for m in sys.modules})))
"""


@pytest.mark.parametrize("labelled", [False, True], ids=["one-image", "labelled-folder"])
def test_infer_on_onnx_imports_nothing_that_does_not_predict(tmp_path, labelled, monkeypatch):
    monkeypatch.setenv("BONEDEPLOY_CACHE_DIR", str(tmp_path / "cache"))
    model = tiny_onnx_classifier(tmp_path / "model.onnx")
    if labelled:  # labels found: the metrics are computed, so [report] may load after the rows
        inputs = tmp_path / "data"
        png(inputs / "Fractured" / "a.png", 200, (40, 40))
        png(inputs / "Normal" / "b.png", 10, (40, 40))
    else:
        inputs = png(tmp_path / "x.png", 7, (40, 40))
    out = subprocess.run([sys.executable, "-c", PROBE, "infer", "--engine", str(model), str(inputs),
                          "--out", str(tmp_path / "p.csv"), "--backend", "onnxruntime", "-q"],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    loaded = set(json.loads(out.stdout.strip().splitlines()[-1]))
    assert "onnxruntime" in loaded and "bonedeploy" in loaded  # the probe saw the real run
    allowed = {"sklearn", "scipy"} if labelled else set()
    assert not (set(NOT_ON_THE_PREDICTION_PATH) - allowed) & loaded
