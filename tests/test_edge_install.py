"""The base install (no scikit-learn, scipy, matplotlib, torch): ``infer`` on an ONNX file.

The report extra's packages are blocked by stand-in packages that raise on import, so this runs in
the development venv; ``.ci/edge.sh`` checks the same on a real base install from the wheel.
"""

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
from PIL import Image

from onnxkit import tiny_onnx_classifier

REPO = Path(__file__).resolve().parents[1]
BLOCKED = ("torch", "sklearn", "scipy", "matplotlib")


def blocking_env(tmp_path: Path) -> dict[str, str]:
    root = tmp_path / "blocker"
    for name in BLOCKED:
        (root / name).mkdir(parents=True)
        (root / name / "__init__.py").write_text(
            f"raise ModuleNotFoundError('{name} is blocked in this test', name='{name}')\n")
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(root), str(REPO)])}


def test_labelled_infer_writes_every_row_and_the_metrics(tmp_path):
    """The metrics are numpy: the base install reports them all (ROC AUC included), no hint."""
    for cls, level in (("Fractured", 200), ("Normal", 50)):
        (tmp_path / "imgs" / cls).mkdir(parents=True)
        for i in range(3):
            Image.fromarray(np.full((36, 36), level + i, np.uint8)).save(tmp_path / "imgs" / cls / f"{i}.png")
    model = tiny_onnx_classifier(tmp_path / "tiny.onnx")
    out = tmp_path / "preds.csv"
    proc = subprocess.run([sys.executable, "-m", "bonedeploy", "infer", "--engine", str(model),
                           str(tmp_path / "imgs"), "--out", str(out), "--workers", "0"],
                          capture_output=True, text=True, env=blocking_env(tmp_path), timeout=120,
                          cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    with open(out, newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 6 and all(r["predicted"] == r["label"] for r in rows)
    assert "bonedeploy[report]" not in proc.stdout and "metrics on 6 labelled images" in proc.stdout
    m = json.loads((tmp_path / "preds.metrics.json").read_text())
    assert m["accuracy"] == 1.0 and m["roc_auc"] == 1.0 and m["accuracy_ci95"][1] == 1.0


def test_every_command_module_imports_without_the_report_extra(tmp_path):
    """`bonedeploy --help` imports every command module: none may need the report extra."""
    proc = subprocess.run([sys.executable, "-m", "bonedeploy", "--help"], capture_output=True,
                          text=True, env=blocking_env(tmp_path), timeout=60)
    assert proc.returncode == 0 and "infer" in proc.stdout, proc.stderr


def test_synth_without_scipy_names_the_extra(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "bonedeploy", "synth", str(tmp_path / "s"), "--n", "2"],
                          capture_output=True, text=True, env=blocking_env(tmp_path), timeout=60)
    assert proc.returncode == 1 and "pip install 'bonedeploy[report]'" in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stderr
