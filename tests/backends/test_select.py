"""The runtime record: bench --select writes the fastest row that passed parity; --backend auto
uses it only for the same file on the same kind of machine; infer prints and records the choice."""

import json

import pytest

from bonedeploy.backends import select
from bonedeploy.backends.modelcache import artefact_sha256
from bonedeploy.errors import ConfigError
from bonedeploy.util.fs import write_json
from bonedeploy.util.machine import machine_slug
from onnxkit import tiny_onnx_classifier


@pytest.fixture(autouse=True)
def cache_root(tmp_path, monkeypatch):
    monkeypatch.setenv("BONEDEPLOY_CACHE_DIR", str(tmp_path / "cache"))


def row(path, backend, status="ok", rates=(100.0, 200.0)):
    return {"path": str(path), "backend": backend, "label": backend, "status": status, "options": {},
            "parity": {"top1_agreement": 1.0, "max_abs_dprob": 0.0},
            "timings": {"compute": {str(b): {"images_per_s": r, "p50_ms": 1000 * b / r}
                                    for b, r in zip((1, 8), rates)}}}


def report(rows):
    return {"results": rows, "machine": {"cpu": "x", "cores": 2}, "created": "now", "command": "bench",
            "notes": ["each row was timed in its own process"]}


@pytest.fixture
def onnx(tmp_path):
    return tiny_onnx_classifier(tmp_path / "model.int8.onnx")


def test_the_fastest_row_that_passed_parity_wins(onnx):
    rows = [row(onnx, "onnxruntime", rates=(50, 60)), row(onnx, "openvino", rates=(70, 90))]
    [written] = select.write_records(report(rows))
    assert written == onnx.with_name("model.int8.onnx.runtime.json")
    rec = json.loads(written.read_text())
    assert rec["backend"] == "openvino" and rec["sha256"] == artefact_sha256(onnx)
    assert rec["machine"]["slug"] == machine_slug({"cpu": "x", "cores": 2})
    scores = {c["backend"]: c["score_images_per_s"] for c in rec["candidates"]}
    assert scores["openvino"] == pytest.approx((70 * 90) ** 0.5)
    assert rec["candidates"][0]["images_per_s"] == {"1": 50, "8": 60}


def test_a_faster_row_that_failed_its_gate_never_wins(onnx):
    rows = [row(onnx, "onnxruntime", rates=(50, 60)), row(onnx, "openvino", "gate failed", (500, 900))]
    select.write_records(report(rows))
    assert json.loads(select.record_path(onnx).read_text())["backend"] == "onnxruntime"


def test_no_record_when_one_runtime_or_none_passed(onnx, tmp_path):
    assert select.write_records(report([row(onnx, "onnxruntime")])) == []
    assert select.write_records(report([row(onnx, "onnxruntime", "error"), row(onnx, "openvino", "error")])) == []
    assert not select.record_path(onnx).exists()


def write_record(onnx, **changes):
    m = {"cpu": None, "cores": None}
    select.write_records({**report([row(onnx, "onnxruntime", rates=(1, 1)), row(onnx, "openvino")]),
                          "machine": m})
    path = select.record_path(onnx)
    rec = json.loads(path.read_text())
    rec["machine"]["slug"] = machine_slug()
    rec.update(changes)
    write_json(path, rec)
    return path


def test_auto_uses_a_valid_record_and_onnxruntime_without_one(onnx):
    choice = select.resolve(onnx, "auto")
    assert choice.backend == "onnxruntime" and "no runtime record" in choice.how and not choice.warning
    write_record(onnx)
    choice = select.resolve(onnx, None)
    assert choice.backend == "openvino" and "runtime.json" in choice.how and not choice.warning
    assert select.resolve(onnx, "onnxruntime").backend == "onnxruntime"  # an explicit choice wins


def test_a_stale_record_is_ignored_with_a_warning(onnx, tmp_path):
    write_record(onnx)
    tiny_onnx_classifier(onnx, gain=3.0)  # the artefact changed after the measurement
    choice = select.resolve(onnx, "auto")
    assert choice.backend == "onnxruntime" and "artefact changed" in choice.warning


@pytest.mark.parametrize("change, why", [
    ({"machine": {"slug": "cpu-other-64core"}}, "measured on cpu-other-64core"),
    ({"backend": "tensorrt"}, "cannot run .onnx"),
    ({"format": "x"}, "not a bonedeploy runtime record"),
])
def test_a_record_from_elsewhere_is_ignored_with_the_reason(onnx, change, why):
    write_record(onnx, **change)
    choice = select.resolve(onnx, "auto")
    assert choice.backend == "onnxruntime" and why in choice.warning


def test_a_corrupt_record_is_ignored(onnx):
    select.record_path(onnx).write_text("{oops")
    assert "unreadable" in select.resolve(onnx, "auto").warning


def test_requested_backend_is_validated_with_the_choices():
    assert select.check_requested("auto") == "auto"
    with pytest.raises(ConfigError, match="openvino.*auto|auto"):
        select.check_requested("tflite")


def test_infer_auto_runs_the_recorded_backend_prints_and_records_it(onnx, tmp_path, capsys):
    pytest.importorskip("openvino")
    from PIL import Image

    from bonedeploy.cli.app import main

    write_record(onnx)
    img = tmp_path / "imgs" / "a.png"
    img.parent.mkdir()
    Image.new("L", (32, 32), 200).save(img)
    out = tmp_path / "p.csv"
    with pytest.raises(SystemExit) as e:
        main(["infer", "--engine", str(onnx), str(img.parent), "--out", str(out), "--workers", "0"])
    assert e.value.code in (0, None)
    text = capsys.readouterr().out
    assert "with openvino" in text and "runtime.json" in text
    run = json.loads(out.with_name("p.csv.run.json").read_text())
    assert run["backend"]["backend"] == "openvino" and run["backend_choice"]["requested"] == "auto"
    # a stale record: onnxruntime, and the warning is printed
    tiny_onnx_classifier(onnx, gain=3.0)
    with pytest.raises(SystemExit):
        main(["infer", "--engine", str(onnx), str(img.parent), "--out", str(tmp_path / "q.csv"),
              "--workers", "0"])
    text = capsys.readouterr().out
    assert "with onnxruntime" in text and "ignored" in text


def test_backend_options_reach_the_backend_and_bad_ones_list_the_valid_ones(onnx, tmp_path, capsys):
    pytest.importorskip("openvino")
    from PIL import Image

    from bonedeploy.cli.app import main
    from bonedeploy.cli.commands.infer import parse_backend_options

    assert parse_backend_options(["threads=1", " hint = latency "]) == (("threads", "1"), ("hint", "latency"))
    with pytest.raises(ConfigError, match="KEY=VALUE"):
        parse_backend_options(["threads"])
    img = tmp_path / "a.png"
    Image.new("L", (32, 32), 90).save(img)
    out = tmp_path / "p.csv"
    with pytest.raises(SystemExit) as e:
        main(["infer", "--engine", str(onnx), str(img), "--out", str(out), "--backend", "openvino",
              "--backend-option", "threads=1", "--backend-option", "streams=1", "-q"])
    assert e.value.code in (0, None)
    run = json.loads(out.with_name("p.csv.run.json").read_text())
    assert run["backend"]["threads"] == 1 and run["backend_choice"]["how"] == "requested"
    with pytest.raises(SystemExit) as e:
        main(["infer", "--engine", str(onnx), str(img), "--out", str(tmp_path / "q.csv"), "--backend",
              "openvino", "--backend-option", "turbo=1", "-q"])
    assert e.value.code == 1
    assert "valid options" in capsys.readouterr().err
