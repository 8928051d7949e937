"""Cold start: real `bonedeploy infer` processes timed from outside, and the bench column."""

import json
import sys

import pytest

from bonedeploy.bench import BenchConfig, run_bench
from bonedeploy.bench import coldstart
from bonedeploy.bench.coldstart import (
    ColdStartError,
    StartSpec,
    infer_args,
    infer_command,
    measure_cold_start,
    measure_cold_starts,
)
from bonedeploy.bench.render import report as rpt
from bonedeploy.errors import ConfigError
from imagekit import png
from onnxkit import tiny_onnx_classifier


@pytest.fixture(autouse=True)
def cache_root(tmp_path, monkeypatch):
    monkeypatch.setenv("BONEDEPLOY_CACHE_DIR", str(tmp_path / "cache"))


def test_options_become_the_infer_flags_that_reproduce_the_row():
    assert infer_args({"device": "cuda", "precision": "fp16", "batch_size": 32}) == [
        "--device", "cuda", "--precision", "fp16"]
    assert infer_args({"hint": "latency", "threads": 2, "provider": None}) == [
        "--backend-option", "hint=latency", "--backend-option", "threads=2"]
    assert infer_args({"cuda_graph": True, "device": "cuda"}) is None  # captured per batch size
    from bonedeploy.bench.runtimes import local_backends

    with pytest.raises(ConfigError, match="torch-compile.*valid: " + ", ".join(local_backends()) + "$"):
        infer_command("m.pt", "x.png", "o.csv", "torch-compile")


def test_a_real_start_is_timed_to_its_first_row(tmp_path):
    model = tiny_onnx_classifier(tmp_path / "model.onnx")
    image = png(tmp_path / "x.png", 7, (40, 40))
    cs = measure_cold_start(model, "onnxruntime", image, 2, tmp_path, {"threads": 1})
    d = cs.to_dict()
    assert d["runs"] == 2 and len(d["all_s"]) == 2 and 0 < d["min_s"] <= d["median_s"] <= d["max_s"]
    assert len(d["all_exit_s"]) == 2 and d["min_exit_s"] <= d["median_exit_s"] <= d["max_exit_s"]
    for row_s, exit_s in zip(d["all_s"], d["all_exit_s"]):  # each row is written before its exit
        assert row_s <= exit_s
    assert d["peak_rss_mb"] > 20  # an interpreter with numpy and onnxruntime loaded
    assert len(d["all_cpu_s"]) == 2 and 0 < d["median_cpu_s"] < 60  # the child's, from its rusage
    assert "--backend onnxruntime" in d["command"] and "threads=1" in d["command"]
    assert d["metrics"] is False  # no class folder above the image: no labels, no metrics
    assert not list(tmp_path.glob("coldstart-*"))  # its outputs are removed


def test_starts_taking_turns_each_keep_their_own_times_and_metrics(tmp_path):
    """The same bytes labelled (a class folder above) and not: only the first computes metrics."""
    model = tiny_onnx_classifier(tmp_path / "model.onnx")
    labelled = png(tmp_path / "elbows" / "Fractured" / "one.png", 7, (40, 40))
    bare = png(tmp_path / "loose" / "one.png", 7, (40, 40))
    specs = [StartSpec(model, "onnxruntime", p) for p in (labelled, bare)]
    with_labels, without = measure_cold_starts(specs, 2, tmp_path)
    assert (with_labels.metrics, without.metrics) == (True, False)
    assert str(labelled) in with_labels.command and str(bare) in without.command
    for cs in (with_labels, without):
        assert len(cs.times_s) == len(cs.exit_s) == 2
        assert all(row <= done for row, done in zip(cs.times_s, cs.exit_s))
    assert not list(tmp_path.glob("coldstart-*"))  # the metrics file too
    with pytest.raises(ConfigError, match="runs must be >= 1"):
        measure_cold_starts(specs, 0, tmp_path)


def test_a_failing_start_names_the_command_and_its_error(tmp_path):
    (tmp_path / "broken.onnx").write_bytes(b"not a model")
    image = png(tmp_path / "x.png")
    with pytest.raises(ColdStartError, match=r"exited 1: .*broken\.onnx"):
        measure_cold_start(tmp_path / "broken.onnx", "onnxruntime", image, 1, tmp_path)


def test_cpu_seconds_are_the_childs_own_not_the_wall_clock(tmp_path):
    busy_then_idle = ("import time\nt = time.process_time()\nwhile time.process_time() - t < 0.3: pass\n"
                      "time.sleep(0.4)")
    t = coldstart.time_start([sys.executable, "-c", busy_then_idle], tmp_path / "o.csv")
    assert 0.3 <= t["cpu_s"] < t["exit_s"] - 0.3 and t["first_row_s"] == t["exit_s"]  # no row: the exit


def test_a_hung_start_is_killed_at_the_timeout(tmp_path):
    cmd = [sys.executable, "-c", "import time; time.sleep(30)"]
    with pytest.raises(ColdStartError, match="ran past 0.5 s"):
        coldstart.time_start(cmd, tmp_path / "o.csv", timeout_s=0.5)


@pytest.fixture
def run_dir(tmp_path):
    tiny_onnx_classifier(tmp_path / "run" / "model.onnx")
    for cls, value in (("Fractured", 200), ("Normal", 40)):
        for i in range(2):
            png(tmp_path / "data" / cls / f"{i}.png", value + i, (40, 40))
    return tmp_path / "run"


def bench_config(run_dir, **kw):
    return BenchConfig(run_dir=run_dir, data=run_dir.parent / "data", batch_sizes=(1,), duration_s=0.0,
                       warmup_s=0.0, min_iterations=1, mode="compute", quiet=True,
                       other_runtimes=False, **kw)


def test_bench_gives_every_row_that_ran_its_cold_start(run_dir):
    rep = run_bench(bench_config(run_dir, cold_start_runs=1, isolate=False))
    row = next(r for r in rep.results if r.target.key == "onnx-fp32")
    assert row.status == "ok" and row.cold_start["runs"] == 1 and row.cold_start["median_s"] > 0
    missing = [r for r in rep.results if not r.ran]
    assert missing and all(r.cold_start is None for r in missing)
    d = json.loads(json.dumps(rep.to_dict()))
    assert d["config"]["cold_start_runs"] == 1 and "--cold-start-runs 1" in d["command"]
    assert any(n.startswith("cold start:") for n in d["notes"])
    md = rpt.to_markdown(d)
    assert "## Load time, cold start and memory" in md
    assert f"{row.cold_start['median_s']:.2f} (" in md
    table = rpt.rich_table(d, "compute", width=200)
    assert "start s" in [c.header for c in table.columns]


def test_a_failed_cold_start_is_a_warning_not_a_failed_bench(run_dir, monkeypatch):
    def fail(*a, **k):
        raise ColdStartError("bonedeploy infer exited 1: no luck")

    monkeypatch.setattr(coldstart, "measure_cold_start", fail)
    rep = run_bench(bench_config(run_dir, cold_start_runs=2, isolate=False))
    row = next(r for r in rep.results if r.target.key == "onnx-fp32")
    assert row.status == "ok" and row.cold_start == {"error": "bonedeploy infer exited 1: no luck"}
    d = rep.to_dict()
    assert "ONNX fp32: cold start failed: bonedeploy infer exited 1: no luck" in rpt.warnings(d)
    assert "| failed |" in rpt.to_markdown(d)


def test_zero_runs_measure_nothing_and_negative_is_refused(run_dir):
    rep = run_bench(bench_config(run_dir, cold_start_runs=0, isolate=False))
    assert all(r.cold_start is None for r in rep.results)
    assert "start s" not in [c.header for c in rpt.rich_table(rep.to_dict(), width=200).columns]
    with pytest.raises(ConfigError, match="--cold-start-runs must be >= 0"):
        bench_config(run_dir, cold_start_runs=-1)
