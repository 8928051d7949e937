"""report: the terminal table, Markdown, JSON and PNG rendered from one benchmark result.

The result is built by hand from known latencies, so every rendered number can be checked.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image
from rich.console import Console

from bonedeploy.bench import render
from bonedeploy.bench.render import report
from bonedeploy.bench import ArtefactResult, BenchConfig, BenchReport, Target, summarize

MACHINE = {"cpu": "Test CPU 9000", "cores": 2, "gpu": None, "platform": "linux",
           "versions": {"bonedeploy": "0.1.0", "onnxruntime": "1.32.0"}, "git_commit": "abc123"}


def _stats(ms: float, bs: int, jitter: float = 0.0):
    lat = [ms / 1e3, (ms + jitter) / 1e3, ms / 1e3, (ms - jitter) / 1e3]
    return summarize(lat, bs)


def _parity(acc_delta=0.0, agree=1.0, flips=()):
    return {"n": 40, "max_abs_dprob": 3e-3, "mean_abs_dprob": 1e-4, "top1_agreement": agree,
            "accuracy_ref": 0.8, "accuracy_cand": 0.8 + acc_delta, "accuracy_delta": acc_delta,
            "sensitivity_cand": 0.75, "specificity_cand": 0.85, "reference": "PyTorch fp32",
            "flips": [{"index": 3, "path": f"/data/Fractured/{f}", "ref_class": "Fractured",
                       "cand_class": "Normal", "ref_prob": 0.81, "near_boundary": False}
                      for f in flips]}


@pytest.fixture()
def result(tmp_path) -> dict:
    cfg = BenchConfig(run_dir=tmp_path, batch_sizes=(1, 8), duration_s=0.5, mode="compute")
    t = lambda key, label, name, backend, prec, **kw: Target(key, label, tmp_path / name, backend, prec, **kw)  # noqa: E731
    ref = ArtefactResult(t("torch-fp32", "PyTorch fp32", "best.pt", "torch", "fp32", reference=True),
                         precision="fp32", size_mb=1.5, load_s=0.4, peak_rss_mb=700.0,
                         timings={"compute": {1: _stats(20.0, 1), 8: _stats(100.0, 8)}},
                         parity=_parity())
    int8 = ArtefactResult(t("onnx-int8", "ONNX int8", "model.int8.onnx", "onnxruntime", "int8"),
                          status="gate failed", reason="top-1 agreement 95.0% < 98%", precision="int8",
                          size_mb=0.4, load_s=0.1,
                          timings={"compute": {1: _stats(10.0, 1, jitter=6.0), 8: _stats(25.0, 8)}},
                          parity=_parity(-0.025, 0.95, ["case_07.png", "case_11.png"]),
                          gate_failures=["top-1 agreement 95.0% < 98%"])
    trt = ArtefactResult(t("tensorrt", "TensorRT", "model.trt", "tensorrt", "unknown"),
                         status="missing", reason="model.trt: no such file; build it on a TensorRT machine")
    rep = BenchReport(cfg, MACHINE, [ref, int8, trt], {"kind": "synthetic", "n": 40},
                      ["a note for the reader"], created="2026-01-01T00:00:00+00:00")
    return rep.to_dict()


def test_speedup_is_against_the_reference_in_the_same_run(result):
    int8 = result["results"][1]
    # reference 8 images per 100 ms = 80/s; int8 8 per 25 ms = 320/s
    assert report.speedup(result, int8, "compute", 8) == pytest.approx(4.0)
    assert report.speedup(result, result["results"][0], "compute", 1) == pytest.approx(1.0)
    assert report.speedup(result, result["results"][2], "compute", 1) is None
    assert result["reference"] == "torch-fp32" and result["results"][0]["reference"]


def test_rich_table_shows_status_speed_and_agreement(result):
    console = Console(record=True, width=180)
    report.print_report(result, console)
    text = console.export_text()
    assert "PyTorch fp32" in text and "ONNX int8" in text and "TensorRT" in text
    assert "❌ gate" in text and "❎ missing" in text
    assert "4.00×" in text and "95.0%" in text and "-2.5" in text  # speedup, agreement, Δacc pp
    assert "2 label flip(s)" in text and "case_07.png" in text
    assert "unstable: CV" in text  # the jittery int8 batch-1 row
    assert "TensorRT rows need a machine with TensorRT" in text


def test_markdown_holds_every_number(result):
    md = report.to_markdown(result)
    assert md.startswith("# bonedeploy bench")
    assert "bonedeploy bench --dir" in md and "Test CPU 9000" in md
    assert "| ONNX int8 | gate failed |" in md
    assert "| PyTorch fp32 | 8 | 4 | 100 | 100 |" in md  # batch, iterations, mean ms, p50 ms
    assert "25.00 ms · 320/s · 4.00×" in md
    assert "`/data/Fractured/case_07.png` Fractured → Normal" in md
    assert "**TensorRT**" in md and "no such file" in md
    assert "a note for the reader" in md and "were NOT measured" in md


def test_write_outputs_json_md_png(result, tmp_path):
    out = tmp_path / "out"
    written = render.write_outputs(result, out / "b.json", out / "b.md", out / "b.png")
    assert [p.name for p in written] == ["b.json", "b.md", "b.png"]
    d = json.loads((out / "b.json").read_text())
    t = d["results"][1]["timings"]["compute"]["8"]
    assert t["p50_ms"] == pytest.approx(25.0) and t["images_per_s"] == pytest.approx(320.0)
    assert d["machine"]["cpu"] == "Test CPU 9000" and d["config"]["batch_sizes"] == [1, 8]
    assert d["results"][1]["gate_failures"] == ["top-1 agreement 95.0% < 98%"]
    assert "320" in (out / "b.md").read_text()
    png = out / "b.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with Image.open(png) as im:
        assert im.width > 1000 and im.height > 400
    assert not list(out.glob(".*.tmp"))  # written atomically, no temp files left


def test_plot_without_any_measured_row(tmp_path):
    cfg = BenchConfig(batch_sizes=(1,))
    trt = ArtefactResult(Target("tensorrt", "TensorRT", Path("model.trt"), "tensorrt", "unknown"),
                         status="unavailable", reason="no TensorRT")
    d = BenchReport(cfg, MACHINE, [trt]).to_dict()
    render.write_outputs(d, plot_path=tmp_path / "empty.png")
    assert (tmp_path / "empty.png").stat().st_size > 1000
    assert "| TensorRT | unavailable |" in report.to_markdown(d)


def test_a_single_batch_size_plots_without_numpy_deprecations(result, tmp_path):
    """One point per line: the error bars once reached matplotlib as a list of 1-element arrays,
    which numpy >= 1.25 deprecates (and will refuse) converting to a scalar."""
    import warnings

    for r in result["results"]:
        for per in (r.get("timings") or {}).values():
            for bs in [k for k in per if k != "1"]:
                del per[bs]
    result["config"]["batch_sizes"] = [1]
    with warnings.catch_warnings():
        warnings.simplefilter("error", DeprecationWarning)
        render.write_outputs(result, plot_path=tmp_path / "one.png")
    assert (tmp_path / "one.png").stat().st_size > 1000
