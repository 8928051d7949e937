"""The main job end to end at a tiny size: every artefact exists and the summary tells the truth."""

import csv
import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from bonedeploy.cli.app import app
from bonedeploy.demo import SIZES, DemoConfig, run_demo
from bonedeploy.errors import ConfigError


@pytest.fixture(scope="module")
def demo(tmp_path_factory) -> tuple[Path, dict, str]:
    out = tmp_path_factory.mktemp("demo") / "d"
    res = CliRunner().invoke(app, ["demo", "--size", "tiny", "--device", "cpu", "--out", str(out)])
    assert res.exit_code == 0, res.output
    return out, json.loads((out / "summary.json").read_text()), res.output


@pytest.mark.slow
def test_demo_leaves_every_artefact(demo):
    out, s, _ = demo
    for rel in ("data/Fractured", "data/Normal", "data/test", "data/test_answers.csv", "run/best.pt",
                "run/last.pt", "run/report.json", "run/curves.png", "run/model.onnx",
                "run/model.fp16.onnx", "run/model.int8.onnx", "run/export.json", "predictions.csv",
                "bench.json", "bench.md", "bench.png", "summary.json", "summary.md"):
        assert (out / rel).exists(), rel
    assert [e["precision"] for e in s["export"]] == ["fp32", "fp16", "int8"]
    assert s["engine"]["built"] is False and "bonedeploy export" in s["engine"]["command"]


@pytest.mark.slow
def test_reported_accuracy_matches_the_predictions_file(demo):
    out, s, _ = demo
    answers = {r["path"]: r["label"] for r in csv.DictReader((out / "data/test_answers.csv").open())}
    all_rows = list(csv.DictReader((out / "predictions.csv").open()))
    assert len(all_rows) == len(answers) == SIZES["tiny"].test_n
    rows = [r for r in all_rows if r["status"] == "ok"]  # the OOD gate's refusals have no label
    assert len(rows) == s["test"]["n"] == len(all_rows) - s["ood"]["test_refused"]
    correct = sum(r["predicted"] == answers[Path(r["path"]).name] for r in rows)
    assert s["test"]["accuracy"] == pytest.approx(correct / len(rows))
    lo, hi = s["test"]["accuracy_ci95"]
    assert lo <= s["test"]["accuracy"] <= hi


@pytest.mark.slow
def test_summary_numbers_come_from_the_step_outputs(demo):
    out, s, output = demo
    report = json.loads((out / "run/report.json").read_text())
    assert s["training"]["val_accuracy"] == report["val"]["accuracy"]
    export = json.loads((out / "run/export.json").read_text())
    assert len(export["files"]) == 3
    bench = json.loads((out / "bench.json").read_text())
    ok_rows = [r for r in s["bench"]["rows"] if r["status"] == "ok"]
    assert {r["artefact"] for r in ok_rows} >= {"PyTorch fp32", "ONNX fp32", "ONNX int8"}
    assert len(bench["results"]) == len({r["artefact"] for r in s["bench"]["rows"]})
    assert "demo summary" in output and "accuracy" in (out / "summary.md").read_text()


@pytest.mark.slow
def test_the_gate_at_work_on_generated_non_radiographs(demo):
    out, s, output = demo
    o = s["ood"]
    rows = list(csv.DictReader((out / "non_radiographs" / "predictions.csv").open()))
    assert len(rows) == o["non_radiographs"] == 6 * SIZES["tiny"].non_radiographs
    assert o["non_radiographs_refused"] == sum(r["status"].startswith("rejected: ") for r in rows)
    assert o["answered"] == [Path(r["path"]).name for r in rows if r["status"] == "ok"]
    md = (out / "summary.md").read_text()
    assert "## Out-of-distribution gate" in md and f"**{o['test_refused']} of {o['test_n']}**" in md
    assert f"**{o['non_radiographs_refused']} of {o['non_radiographs']}**" in md


def test_existing_output_is_not_overwritten(tmp_path):
    (tmp_path / "keep.txt").write_text("mine")
    with pytest.raises(ConfigError, match="--overwrite"):
        run_demo(DemoConfig(out=tmp_path, size="tiny"))
    assert (tmp_path / "keep.txt").read_text() == "mine"


def test_unknown_size_lists_valid_sizes():
    with pytest.raises(ConfigError, match="valid sizes: gpu, cpu, tiny"):
        DemoConfig(size="huge").resolve_size(cuda=False)


def test_the_deployed_artefact_gets_its_cold_start_or_the_reason(tmp_path, monkeypatch):
    from bonedeploy.demo import _cold_start
    from imagekit import png
    from onnxkit import tiny_onnx_classifier

    monkeypatch.setenv("BONEDEPLOY_CACHE_DIR", str(tmp_path / "cache"))
    png(tmp_path / "test" / "a.png", 3, (40, 40))
    c = _cold_start(tiny_onnx_classifier(tmp_path / "model.onnx"), tmp_path / "test", 1, tmp_path)
    assert c["backend"] == "onnxruntime" and c["runs"] == 1 and c["median_s"] > 0
    (tmp_path / "bad.onnx").write_bytes(b"junk")
    assert "bad.onnx" in _cold_start(tmp_path / "bad.onnx", tmp_path / "test", 1, tmp_path)["error"]
    assert _cold_start(tmp_path / "model.onnx", tmp_path / "test", 0, tmp_path) is None
