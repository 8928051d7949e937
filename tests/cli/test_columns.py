"""Every table-printing command at 80 columns: names and verdicts print whole (never "…"),
secondary columns give way. Cheap: the tiny ONNX model and hand-made results."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
from PIL import Image
from rich.console import Console
from typer.testing import CliRunner

from bonedeploy.bench import ArtefactResult, BenchConfig, BenchReport, Target, summarize
from bonedeploy.bench.render import report
from bonedeploy.cli.app import app
from bonedeploy.cli.commands.demo import print_summary
from bonedeploy.cli.commands.export import result_table
from bonedeploy.ui.tables import KEY, Col, fit_table
from bonedeploy.demo import summary_markdown
from bonedeploy.models import list_models
from onnxkit import tiny_onnx_classifier

WIDTH = 80


def fits(text: str) -> None:
    assert "…" not in text, text
    assert max(len(line) for line in text.splitlines()) <= WIDTH, text


def render(*renderables) -> str:
    console = Console(width=WIDTH, record=True, file=open("/dev/null", "w"))
    for r in renderables:
        console.print(r)
    return console.export_text()


def test_fit_table_drops_secondary_columns_lowest_priority_first():
    cols = [Col("name", KEY, "left"), Col("a" * 30, 1), Col("b" * 30, 2), Col("verdict", KEY)]
    text = render(fit_table(cols, [["a_long_model_name_to_copy", "1", "2", "FAIL"]], WIDTH))
    fits(text)
    assert "a_long_model_name_to_copy" in text and "FAIL" in text and "b" * 30 in text
    header = next(line for line in text.splitlines() if "name" in line)
    assert "a" * 30 not in header and "b" * 30 in header
    assert "not shown at 80 columns:" in text and text.count("a" * 30) == 1


def test_models_prints_every_name_whole():
    r = CliRunner().invoke(app, ["models"], env={"COLUMNS": str(WIDTH)})
    assert r.exit_code == 0, r.output
    fits(r.output)
    for name in list_models():
        assert f" {name} " in r.output, name


def _export_file(name: str, prec: str, passed: bool):
    return SimpleNamespace(path=Path("/runs/alexnet") / name, precision=prec, bytes=140_600_000, passed=passed,
                           parity={"max_abs_dprob": 3e-3, "mean_abs_dprob": 1e-4, "top1_agreement": 0.95,
                                   "accuracy_delta": -0.025, "flips": [1, 2], "flips_away": 1})


def test_export_table_keeps_file_names_and_gate_verdicts():
    result = SimpleNamespace(model="alexnet_d08_wd1e-3", out_dir=Path("/runs/alexnet"),
                             parity_inputs={"n": 40, "kind": "validation"},
                             files=[_export_file("model.onnx", "fp32", True),
                                    _export_file("model.fp16.onnx", "fp16", True),
                                    _export_file("model.int8.onnx", "int8", False)])
    text = render(result_table(result, WIDTH))
    fits(text)
    for name, verdict in (("model.onnx", "pass"), ("model.fp16.onnx", "pass"), ("model.int8.onnx", "FAIL")):
        row = next(line for line in text.splitlines() if name + " " in line)
        assert row.rstrip().endswith(verdict), row


def test_infer_summary_at_80_columns(tmp_path):
    for cls, level in (("Fractured", 200), ("Normal", 50)):
        (tmp_path / "a_rather_long_folder_name" / cls).mkdir(parents=True)
        for i in range(2):
            Image.fromarray(np.full((36, 36), level + i, np.uint8)).save(
                tmp_path / "a_rather_long_folder_name" / cls / f"{i}.png")
    model = tiny_onnx_classifier(tmp_path / "tiny.onnx")
    r = CliRunner().invoke(app, ["infer", "--engine", str(model), str(tmp_path / "a_rather_long_folder_name"),
                                 "--out", str(tmp_path / "p.csv"), "--workers", "0"],
                           env={"COLUMNS": str(WIDTH)})
    assert r.exit_code == 0, r.output
    table = r.output[r.output.index("metrics on"):r.output.index("metrics ->")]
    fits(table)
    assert "1.000 (95% CI 0.510–1.000, n=4)" in table and "Fractured:" in table and "Normal:" in table
    assert f"metrics -> {tmp_path / 'p.metrics.json'}" in r.output  # a path to copy: never re-wrapped


def _bench_result(tmp_path) -> dict:
    cfg = BenchConfig(run_dir=tmp_path, batch_sizes=(1, 8, 32), duration_s=0.5, mode="compute")
    timings = {"compute": {bs: summarize([ms / 1e3] * 4, bs) for bs, ms in ((1, 20.0), (8, 100.0), (32, 380.0))}}
    parity = {"n": 40, "max_abs_dprob": 3e-3, "mean_abs_dprob": 1e-4, "top1_agreement": 0.95,
              "accuracy_ref": 0.8, "accuracy_cand": 0.775, "accuracy_delta": -0.025, "flips": []}
    rows = [ArtefactResult(Target(key, label, tmp_path / name, backend, prec, reference=key == "torch-fp32"),
                           status=status, precision=prec, size_mb=140.6, timings=timings, parity=parity,
                           cold_start={"median_s": 1.23, "min_s": 1.2, "max_s": 1.3, "runs": 3})
            for key, label, name, backend, prec, status in (
                ("torch-fp32", "PyTorch fp32 eager", "best.pt", "torch", "fp32", "ok"),
                ("onnx-int8", "ONNX int8 (QDQ)", "model.int8.onnx", "onnxruntime", "int8", "gate failed"))]
    rows.append(ArtefactResult(Target("tensorrt", "TensorRT fp16", tmp_path / "model.trt", "tensorrt", "fp16"),
                               status="missing", reason="model.trt: no such file"))
    return BenchReport(cfg, {"cpu": "Test CPU", "cores": 2, "gpu": None, "versions": {}}, rows).to_dict()


def test_bench_table_keeps_artefacts_and_statuses(tmp_path):
    d = _bench_result(tmp_path)
    text = render(report.rich_table(d, "compute", parity=True, width=WIDTH))
    fits(text)
    for label, status in (("PyTorch fp32 eager", "ok"), ("ONNX int8 (QDQ)", "gate"), ("TensorRT fp16", "missing")):
        row = next(line for line in text.splitlines() if label in line)
        assert status in row, row
    assert "batch 1" in text  # the speed columns outlive the parity columns


def test_demo_summary_keeps_file_names_and_verdicts():
    s = {"model": "alexnet_d08_wd1e-3", "difficulty": "easy", "device": "cpu", "size": {"epochs": 4},
         "data": {"counts": {"Fractured": 100, "Normal": 100}, "root": "/d", "answers": "/d/test_answers.csv"},
         "training": {"best_epoch": 4, "val_accuracy": 0.95, "checkpoint": "/r/best.pt"},
         "test": {"n": 100, "artefact": "/r/model.int8.onnx", "accuracy": 0.96, "accuracy_ci95": [0.9, 0.98],
                  "sensitivity": 0.94, "specificity": 0.98, "roc_auc": 0.984, "predictions": "/r/p.csv",
                  "cold_start": {"backend": "onnxruntime", "median_s": 1.06, "runs": 1, "peak_rss_mb": 465.0}},
         "export": [{"file": f"/r/model{sfx}.onnx", "precision": p, "mb": 140.6, "max_abs_dprob": 1e-5,
                     "top1_agreement": 1.0, "accuracy_delta": 0.0, "passed": p != "int8"}
                    for sfx, p in (("", "fp32"), (".fp16", "fp16"), (".int8", "int8"))],
         "engine": {"built": False, "reason": "TensorRT is not installed"},
         "bench": {"md": "b.md", "json": "b.json", "plot": "b.png",
                   "rows": [{"artefact": "ONNX int8 (QDQ)", "batch": 8, "p50_ms": 120.0, "images_per_s": 63.3,
                             "status": "ok"},
                            {"artefact": "TensorRT fp16", "status": "missing",
                             "reason": "model.trt: no such file; build it on a TensorRT machine"}]},
         "seconds": {"synth": 16}, "total_seconds": 16}
    console = Console(width=WIDTH, record=True, file=open("/dev/null", "w"))
    print_summary(console, summary_markdown(s))
    text = console.export_text()
    fits(text)
    for name, verdict in (("model.onnx", "pass"), ("model.fp16.onnx", "pass"), ("model.int8.onnx", "FAIL")):
        row = next(line for line in text.splitlines() if name + " " in line and "ONNX:" not in line)
        assert row.rstrip().endswith(verdict), row
    assert "TensorRT fp16" in text and "missing:" in text
    assert any("ONNX int8 (QDQ)" in line for line in text.splitlines())  # the name kept whole
    assert "1.06" in text
