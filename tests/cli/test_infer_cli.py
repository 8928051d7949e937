"""``bonedeploy infer`` on the command line: exit codes, outputs, and the torch-free edge path."""

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from clikit import run_cli
from onnxkit import tiny_onnx_classifier

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return tiny_onnx_classifier(tmp_path_factory.mktemp("m") / "tiny.onnx")


@pytest.fixture
def imgs(tmp_path):
    for cls, level in (("Fractured", 200), ("Normal", 50)):
        (tmp_path / "imgs" / cls).mkdir(parents=True)
        for i in range(3):
            Image.fromarray(np.full((36, 36), level + i, np.uint8)).save(tmp_path / "imgs" / cls / f"{i}.png")
    return tmp_path / "imgs"



def test_all_ok_exits_0_and_prints_metrics(model, imgs, tmp_path, capsys):
    code, out, _ = run_cli(["infer", "--engine", str(model), str(imgs), "-o", str(tmp_path / "p.csv"),
                            "--workers", "0"], capsys)
    assert code == 0
    assert "6 images: 6 ok, 0 failed" in out and "accuracy" in out and "sensitivity" in out
    assert json.loads((tmp_path / "p.metrics.json").read_text())["accuracy"] == 1.0


def test_a_bad_image_exits_3_unless_tolerated(model, imgs, tmp_path, capsys):
    (imgs / "Normal" / "zero.png").write_bytes(b"")
    args = ["infer", "-e", str(model), str(imgs), "-o", str(tmp_path / "p.json"), "-j", "0", "-q"]
    code, _, _ = run_cli(args, capsys)
    assert code == 3
    rows = json.loads((tmp_path / "p.json").read_text())["rows"]
    assert [r["status"] for r in rows if r["path"].endswith("zero.png")] == ["error: empty file (0 bytes)"]
    code, _, _ = run_cli(args + ["--max-error-rate", "0.2"], capsys)
    assert code == 0


@pytest.mark.parametrize("args, message", [
    (["-e", "missing.onnx"], "engine not found: missing.onnx"),
    (["--provider", "tensorrt"], "not available here; available providers:"),
    (["--backend", "tflite"], "unknown backend 'tflite'; valid backends:"),
])
def test_run_failures_exit_1_with_one_line(model, imgs, tmp_path, capsys, args, message):
    engine = [] if "-e" in args else ["-e", str(model)]  # a repeated option is refused, not overridden
    base = ["infer", *engine, str(imgs), "-o", str(tmp_path / "p.csv"), "-j", "0"]
    code, _, err = run_cli(base + args, capsys)
    assert code == 1 and message in " ".join(err.split()) and "Traceback" not in err
    assert not (tmp_path / "p.csv").exists()


def test_help_documents_the_exit_codes(capsys):
    code, out, _ = run_cli(["infer", "--help"], capsys)
    text = " ".join(out.split())
    assert code == 0 and "0 every image answered" in text and "3 some images failed" in text and "1 the run itself failed" in text
    assert "4 some images were refused as out of distribution" in text


def test_onnx_path_runs_where_torch_cannot_be_imported(model, imgs, tmp_path):
    """The edge box: numpy, pillow, onnxruntime, no torch. `import torch` raises here."""
    blocker = tmp_path / "blocker" / "torch"
    blocker.mkdir(parents=True)
    marker = tmp_path / "torch-was-imported"
    (blocker / "__init__.py").write_text(f"open({str(marker)!r}, 'w').close()\n"
                                         "raise ImportError('torch is blocked in this test')\n")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(blocker.parent), str(REPO)])}
    out = tmp_path / "preds.csv"
    proc = subprocess.run([sys.executable, "-m", "bonedeploy", "infer", "--engine", str(model), str(imgs),
                           "--out", str(out), "--workers", "1", "--batch-size", "2"],
                          capture_output=True, text=True, env=env, timeout=120, cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert not marker.exists(), "something tried to import torch on the ONNX path"
    with open(out, newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 6 and {r["status"] for r in rows} == {"ok"}
    assert all(r["predicted"] == r["label"] for r in rows)
