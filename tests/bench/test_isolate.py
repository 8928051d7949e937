"""Bench isolation: every row in its own process, parity through the same gate, a crashed or
hung child is one failed row, OpenVINO rows whenever OpenVINO is installed."""

import numpy as np
import pytest

from bonedeploy.bench import BenchConfig, isolate, run_bench
from bonedeploy.errors import ConfigError
from bonedeploy.bench.runtimes import add_runtime_rows, openvino_twin
from bonedeploy.bench.targets import onnx_target
from bonedeploy.util.machine import machine_info
from onnxkit import tiny_onnx_classifier


@pytest.fixture(autouse=True)
def cache_root(tmp_path, monkeypatch):
    monkeypatch.setenv("BONEDEPLOY_CACHE_DIR", str(tmp_path / "cache"))


@pytest.fixture
def run_dir(tmp_path):
    from PIL import Image

    tiny_onnx_classifier(tmp_path / "run" / "model.onnx")
    tiny_onnx_classifier(tmp_path / "run" / "model.fp16.onnx", gain=8.001)  # near, within the gate
    rng = np.random.default_rng(0)
    for cls, base in (("Fractured", 190), ("Normal", 60)):
        (tmp_path / "data" / cls).mkdir(parents=True)
        for i in range(4):
            img = np.clip(base + rng.normal(0, 20, (40, 40)), 0, 255).astype(np.uint8)
            Image.fromarray(img).save(tmp_path / "data" / cls / f"{i}.png")
    return tmp_path / "run"


def config(run_dir, **kw):
    return BenchConfig(run_dir=run_dir, data=run_dir.parent / "data", batch_sizes=(1, 2), duration_s=0.0,
                       warmup_s=0.0, min_iterations=2, mode="compute", quiet=True,
                       **{"cold_start_runs": 0, **kw})  # cold start: tests/bench/test_coldstart.py


def test_each_row_runs_in_its_own_process_with_parity_against_the_first(run_dir):
    targets = [onnx_target(run_dir / "model.onnx"), onnx_target(run_dir / "model.fp16.onnx")]
    logs = []
    rep = isolate.run_isolated(config(run_dir), targets, machine_info(), logs.append)
    a, b = rep.results
    assert a.status == "ok" and b.status == "ok", (a.reason, b.reason)
    pids = {a.describe["process"], b.describe["process"]}
    assert len(pids) == 2 and __import__("os").getpid() not in pids
    assert rep.reference == "onnx-fp32" and b.parity["reference"] == a.target.label
    assert b.parity["n"] == 8 and b.parity["top1_agreement"] == 1.0 and b.gate_failures == []
    assert sorted(b.timings["compute"]) == [1, 2] and b.peak_rss_mb > 0
    assert rep.data["n"] == 8 and any("own process" in n for n in rep.notes)
    assert any("loading" in m for m in logs)  # the child's log reaches the parent


def test_a_gate_failure_in_a_child_is_reported_as_in_process(run_dir):
    tiny_onnx_classifier(run_dir / "model.fp16.onnx", gain=-8.0)  # every decision flipped
    targets = [onnx_target(run_dir / "model.onnx"), onnx_target(run_dir / "model.fp16.onnx")]
    rep = isolate.run_isolated(config(run_dir), targets, machine_info())
    assert rep.results[1].status == "gate failed" and rep.results[1].gate_failures


def test_missing_files_are_settled_without_a_process_and_a_hung_child_is_stopped(run_dir, monkeypatch):
    missing = onnx_target(run_dir / "model.int8.onnx")
    rep = isolate.run_isolated(config(run_dir), [missing], machine_info())
    assert rep.results[0].status == "missing"
    rep = isolate.run_isolated(config(run_dir), [onnx_target(run_dir / "model.onnx")], machine_info(),
                               timeout_s=0.05)
    assert rep.results[0].status == "error" and "stopped" in rep.results[0].reason


def test_a_crashing_child_is_one_error_row(run_dir, monkeypatch):
    monkeypatch.setattr(isolate, "CHILD_MODULE", "bonedeploy.no_such_module")
    rep = isolate.run_isolated(config(run_dir), [onnx_target(run_dir / "model.onnx")], machine_info())
    assert rep.results[0].status == "error" and "exited 1" in rep.results[0].reason
    assert "no_such_module" in rep.results[0].reason  # the child's last lines say why


def test_openvino_rows_join_every_onnx_row_when_installed(run_dir):
    pytest.importorskip("openvino")
    targets = add_runtime_rows([onnx_target(run_dir / "model.onnx")])
    assert [t.key for t in targets] == ["onnx-fp32", "openvino-fp32"]
    assert targets[1].backend == "openvino" and targets[1].label == "OpenVINO fp32"
    rep = run_bench(config(run_dir, select=True))  # isolated by default
    rows = {r.target.key: r for r in rep.results}
    assert rows["openvino-fp32"].status == "ok", rows["openvino-fp32"].reason
    assert rows["openvino-fp32"].parity["max_abs_dprob"] < 1e-4
    assert rows["onnx-fp32"].describe["process"] != rows["openvino-fp32"].describe["process"]


def test_bench_select_writes_the_record_infer_auto_reads(run_dir, capsys):
    pytest.importorskip("openvino")
    from bonedeploy.backends.select import record_path, resolve
    from bonedeploy.bench import bench

    bench(config(run_dir, select=True))
    rec = record_path(run_dir / "model.onnx")
    assert rec.is_file()
    import json

    d = json.loads(rec.read_text())
    assert d["backend"] in ("onnxruntime", "openvino") and len(d["candidates"]) == 2
    assert resolve(run_dir / "model.onnx", "auto").backend == d["backend"]


def test_in_process_mode_is_still_there(run_dir):
    rep = run_bench(config(run_dir, isolate=False))
    rows = {r.target.key: r for r in rep.results}
    assert rows["onnx-fp32"].status == "ok" and "process" not in rows["onnx-fp32"].describe


def test_twin_keys_follow_the_onnx_keys(run_dir):
    t = openvino_twin(onnx_target(run_dir / "model.fp16.onnx"))
    assert t.key == "openvino-fp16" and t.precision == "fp16" and t.path == run_dir / "model.fp16.onnx"


@pytest.mark.parametrize("installed", [True, False])
def test_backend_picks_rows_and_keeps_the_reference(run_dir, monkeypatch, installed):
    from bonedeploy.bench import runtimes
    from bonedeploy.bench.runtimes import collect

    monkeypatch.setattr(runtimes, "openvino_installed", lambda: installed)
    (run_dir / "best.pt").write_bytes(b"")  # present: the torch rows are expected, not missing
    keys = [t.key for t in collect([], run_dir, backends=("openvino",))]
    assert keys == ["torch-fp32", "openvino-fp32", "openvino-fp16", "openvino-int8"]
    keys = [t.key for t in collect([], run_dir, other_runtimes=installed, backends=("onnxruntime",))]
    assert keys == ["torch-fp32", "onnx-fp32", "onnx-fp16", "onnx-int8"]


def test_backend_names_are_checked_against_the_registry():
    from bonedeploy.backends import list_backends

    local = sorted(set(list_backends()) - {"triton"})  # triton is bench --engine URL, not a row
    with pytest.raises(ConfigError, match=r"--backend ov: unknown; valid backends: "
                                          + ", ".join(local + ["torch-compile"]) + "$"):
        BenchConfig(backends=("ov",))
    cfg = BenchConfig(backends=("openvino",))
    assert "--backend openvino" in cfg.command_line() and cfg.to_dict()["backends"] == ["openvino"]


def test_bench_backend_openvino_runs_only_openvino_rows(run_dir):
    pytest.importorskip("openvino")
    rep = run_bench(config(run_dir, backends=("openvino",)))
    ran = {r.target.key: r for r in rep.results if r.ran}
    assert set(ran) == {"openvino-fp32", "openvino-fp16"}, {r.target.key: r.reason for r in rep.results}
    assert all(r.target.backend == "openvino" or r.target.reference for r in rep.results)
