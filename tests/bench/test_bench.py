"""bench: timing statistics, measurement loop, artefact discovery and the runner.

The ``SleepBackend`` below is a test double of the Backend protocol with a known sleep per call:
it tests OUR timing/orchestration logic (warm-up, iteration counts, per-iteration synchronize,
per-batch reopening, status reasons), not any runtime. Real backends are exercised by the
end-to-end test at the bottom (tiny vgg8 checkpoint + ONNX).
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest

from bonedeploy.artefacts.card import ModelCard
from bonedeploy.backends.base import Backend
from bonedeploy.bench import BenchConfig, Runner, discover, measure, summarize
from bonedeploy.bench import targets as dsc
from bonedeploy.bench.inputs import take
from bonedeploy.errors import BackendUnavailableError, ConfigError, IncompatibleEngineError
from bonedeploy.data.preprocess import PreprocessSpec
from bonedeploy.eval.parity import ParitySet

SPEC = PreprocessSpec(crop_size=8)
MACHINE = {"cpu": "test cpu", "cores": 2, "gpu": None, "versions": {"bonedeploy": "t"}}


class SleepBackend(Backend):
    """Test double: sleeps ``sleep_s`` per call, counts synchronize() calls; logits from the mean."""

    name = "sleep"
    suffixes = (".fake",)

    def __init__(self, path, sleep_s=0.002, fail=None, flip=False, precision="fp32", **options):
        super().__init__(path, **options)
        self.sleep_s, self.fail, self.flip, self.prec = sleep_s, fail, flip, precision
        self.syncs = 0
        self.calls = 0

    def _load(self):
        if self.fail:
            raise self.fail
        self._card = ModelCard("vgg8", preprocess=SPEC, precision=self.prec)

    def _infer(self, batch):
        self.calls += 1
        time.sleep(self.sleep_s)
        m = batch.reshape(len(batch), -1).mean(axis=1)
        logits = np.stack([m, 0.5 - m], axis=1).astype(np.float32)
        return logits[:, ::-1].copy() if self.flip else logits

    def synchronize(self):
        self.syncs += 1


def fake_inputs(n=6):
    rng = np.random.default_rng(0)
    x = rng.random((n, *SPEC.input_shape), dtype=np.float32)
    return ParitySet(x, np.arange(n) % 2, [f"img{i}.png" for i in range(n)], "synthetic")


# --- statistics ------------------------------------------------------------------------------
def test_summarize_percentiles_and_throughput():
    lat = np.arange(1, 101) / 1000.0  # 1..100 ms
    s = summarize(lat, batch_size=4)
    assert s.iterations == 100 and s.min_ms == pytest.approx(1) and s.max_ms == pytest.approx(100)
    assert s.p50_ms == pytest.approx(50.5) and s.p90_ms == pytest.approx(90.1)
    assert s.p99_ms == pytest.approx(99.01) and s.mean_ms == pytest.approx(50.5)
    assert s.images_per_s == pytest.approx(4 * 100 / lat.sum())
    assert s.ms_per_image == pytest.approx(50.5 / 4)
    assert s.to_dict()["p95_ms"] == pytest.approx(95.05)


def test_high_variation_warns_and_steady_does_not():
    steady = summarize([0.010, 0.0101, 0.0099, 0.010], 1)
    assert steady.cv < 0.02 and steady.warning is None
    noisy = summarize([0.010, 0.010, 0.010, 0.050], 1)
    assert noisy.cv > 0.5 and noisy.warning.startswith("unstable: CV")
    assert summarize([0.010, 0.012], 1, cv_warn=0.5).warning is None


def test_summarize_rejects_nothing():
    with pytest.raises(ValueError):
        summarize([], 1)


def test_measure_respects_duration_and_min_iterations_with_a_fake_clock():
    now = [0.0]
    clock = lambda: now[0]  # noqa: E731

    def step():
        now[0] += 1 / 64  # every call "takes" 15.625 ms (exact in binary: no rounding drift)

    s = measure(step, 8, warmup_s=4 / 64, duration_s=8 / 64, min_iterations=3, clock=clock)
    assert s.warmup_iterations == 4
    assert s.iterations == 8 and s.p50_ms == pytest.approx(15.625) and s.cv == pytest.approx(0, abs=1e-9)
    assert s.images_per_s == pytest.approx(8 * 64)
    # a slow step: the minimum iteration count wins over the duration
    s = measure(step, 1, warmup_s=0, duration_s=0.001, min_iterations=7, clock=clock)
    assert s.iterations == 7 and s.warmup_iterations == 1


def test_measure_synchronizes_every_iteration_and_includes_the_sleep():
    b = SleepBackend("x.fake", sleep_s=0.003)
    b._card = ModelCard("vgg8", preprocess=SPEC)
    b.loaded = True
    x = take(fake_inputs().x, 2)
    s = measure(lambda: b.infer(x), 2, warmup_s=0.01, duration_s=0.03, min_iterations=4,
                synchronize=b.synchronize)
    assert b.syncs == b.calls == s.iterations + s.warmup_iterations
    assert s.iterations >= 4 and s.min_ms >= 3.0  # the known sleep is inside every sample
    assert s.images_per_s <= 2 / 0.003


def test_take_cycles_through_small_sets():
    x = np.arange(3, dtype=np.float32).reshape(3, 1, 1, 1)
    assert take(x, 7).ravel().tolist() == [0, 1, 2, 0, 1, 2, 0]


# --- discovery -------------------------------------------------------------------------------
def _touch(d: Path, *names: str) -> None:
    for n in names:
        (d / n).write_bytes(b"x")


def test_discover_lists_expected_artefacts_with_reasons(tmp_path, monkeypatch):
    _touch(tmp_path, "best.pt", "model.onnx", "model.int8.onnx", "extra.onnx", "model.trt")
    monkeypatch.setattr(dsc, "_has_cuda", lambda: False)
    monkeypatch.setattr(dsc, "_has_module", lambda name: name != "tensorrt")
    targets = {t.key: t for t in discover(tmp_path)}
    assert list(targets)[:3] == ["torch-fp32", "torch-fp16", "torch-fp16-graph"]
    assert targets["torch-fp32"].reference and targets["torch-fp16-graph"].per_batch
    assert {"onnx-fp32", "onnx-fp16", "onnx-int8", "onnx-extra", "tensorrt"} <= set(targets)
    assert dsc.precheck(targets["torch-fp32"]) is None
    assert dsc.precheck(targets["onnx-int8"]) is None
    status, why = dsc.precheck(targets["torch-fp16"])
    assert status == "unavailable" and "CUDA GPU" in why
    status, why = dsc.precheck(targets["onnx-fp16"])
    assert status == "missing" and "model.fp16.onnx" in why and "bonedeploy export" in why
    status, why = dsc.precheck(targets["tensorrt"])
    assert status == "unavailable" and "TensorRT" in why


def test_discover_without_engine_or_checkpoint_still_lists_them(tmp_path):
    _touch(tmp_path, "model.onnx")
    targets = {t.key: t for t in discover(tmp_path, compile=True)}
    assert "torch-compile" in targets
    status, why = dsc.precheck(targets["torch-fp32"])
    assert status == "missing" and "bonedeploy train" in why
    status, why = dsc.precheck(targets["tensorrt"])
    assert status == "missing" and "TensorRT" in why


def test_explicit_artefacts_and_bad_suffix(tmp_path):
    _touch(tmp_path, "best.pt", "a.onnx")
    ts = dsc.collect_targets([tmp_path / "a.onnx"], tmp_path)
    assert [t.key for t in ts] == ["torch-fp32", "onnx-a"]  # the run dir's reference is added
    assert [t.key for t in dsc.collect_targets([tmp_path / "a.onnx"], None)] == ["torch-fp32", "onnx-a"]
    (tmp_path / "best.pt").unlink()
    assert [t.key for t in dsc.collect_targets([tmp_path / "a.onnx"], None)] == ["onnx-a"]
    with pytest.raises(ConfigError, match=r"valid suffixes: \.pt"):
        dsc.collect_targets([tmp_path / "notes.txt"], None)
    with pytest.raises(ConfigError, match="no such directory"):
        discover(tmp_path / "nope")


def test_config_validates_choices():
    with pytest.raises(ConfigError, match="valid modes: compute, e2e, both"):
        BenchConfig(mode="fast")
    with pytest.raises(ConfigError, match="positive"):
        BenchConfig(batch_sizes=(0, 8))
    assert BenchConfig(batch_sizes=(32, 1, 8, 8)).batch_sizes == (1, 8, 32)
    cmd = BenchConfig(run_dir=Path("runs/x"), duration_s=0.5).command_line()
    assert cmd.startswith("bonedeploy bench --dir runs/x") and "--duration 0.5" in cmd


# --- runner ----------------------------------------------------------------------------------
def _targets(tmp_path):
    _touch(tmp_path, "a.fake", "b.fake", "c.fake", "d.fake")
    mk = lambda key, **kw: dsc.Target(key, key, tmp_path / f"{key}.fake", "sleep", "fp32", **kw)  # noqa: E731
    return [mk("a", reference=True), mk("b", per_batch=True), mk("c"), mk("d"),
            dsc.Target("gone", "gone", tmp_path / "gone.fake", "sleep", "fp32")]


def test_runner_times_every_batch_size_and_reports_why_rows_failed(tmp_path):
    opened = []

    def opener(t, **extra):
        opened.append((t.key, extra.get("batch_size")))
        fail = {"c": BackendUnavailableError("no runtime here"),
                "d": IncompatibleEngineError("built for another GPU; rebuild")}.get(t.key)
        return SleepBackend(t.path, sleep_s=0.001, fail=fail)

    cfg = BenchConfig(batch_sizes=(1, 4), duration_s=0.02, warmup_s=0.0, min_iterations=3,
                      mode="compute", parity=False)
    report = Runner(cfg, opener=opener, inputs=fake_inputs()).run(_targets(tmp_path), MACHINE)
    res = {r.target.key: r for r in report.results}
    assert [r.target.key for r in report.results] == ["a", "b", "c", "d", "gone"]
    a = res["a"]
    assert a.status == "ok" and a.load_s is not None and a.first_call_s >= 0.001 and a.peak_rss_mb > 0
    assert sorted(a.timings["compute"]) == [1, 4]
    assert all(s.iterations >= 3 and s.min_ms >= 1.0 for s in a.timings["compute"].values())
    # the fixed-batch target is reopened for each batch size (CUDA graphs are captured per size)
    assert ("b", 1) in opened and ("b", 4) in opened
    assert (res["c"].status, res["c"].reason) == ("unavailable", "no runtime here")
    assert res["d"].status == "incompatible" and "rebuild" in res["d"].reason
    assert res["gone"].status == "missing" and "no such file" in res["gone"].reason
    d = report.to_dict()
    assert d["reference"] == "a" and d["results"][0]["timings"]["compute"]["4"]["iterations"] >= 3


def test_runner_records_a_crashing_backend_and_continues(tmp_path):
    def opener(t, **extra):
        b = SleepBackend(t.path, sleep_s=0)
        if t.key == "a":
            b._infer = lambda batch: (_ for _ in ()).throw(RuntimeError("kernel exploded"))
        return b

    cfg = BenchConfig(batch_sizes=(2,), duration_s=0.0, warmup_s=0.0, min_iterations=1,
                      mode="compute", parity=False)
    report = Runner(cfg, opener=opener, inputs=fake_inputs()).run(_targets(tmp_path)[:3], MACHINE)
    res = {r.target.key: r for r in report.results}
    assert res["a"].status == "error" and "RuntimeError: kernel exploded" in res["a"].reason
    assert res["c"].status == "ok"


# --- real backends: a tiny vgg8 checkpoint and its ONNX export ------------------------------------
@pytest.mark.slow
def test_bench_real_checkpoint_and_onnx(tmp_path):
    """best.pt on the torch backend is the reference; model.onnx on onnxruntime must agree with it
    within the fp32 gate; the CUDA-only torch modes are listed as unavailable on a CPU machine."""
    torch = pytest.importorskip("torch")
    pytest.importorskip("onnx")
    from PIL import Image

    from bonedeploy.bench import bench
    from bonedeploy.artefacts.checkpoint import save_checkpoint
    from bonedeploy.export.onnx import export_fp32, save_onnx
    from bonedeploy.models import create_model

    torch.manual_seed(0)
    model = create_model("vgg8").eval()
    card = ModelCard("vgg8")
    save_checkpoint(tmp_path / "best.pt", {"card": card.to_dict(), "model_kwargs": {},
                                           "state_dict": model.state_dict()})
    save_onnx(export_fp32(model, card), tmp_path / "model.onnx")
    rng = np.random.default_rng(0)
    for i, cls in enumerate(["Fractured", "Fractured", "Normal", "Normal"]):
        (tmp_path / "data" / cls).mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 255, (48, 40), dtype=np.uint8)).save(tmp_path / "data" / cls / f"{i}.png")

    cfg = BenchConfig(run_dir=tmp_path, data=tmp_path / "data", batch_sizes=(1, 2), duration_s=0.0,
                      warmup_s=0.0, min_iterations=2, mode="compute", quiet=True,
                      json_path=tmp_path / "b.json", cold_start_runs=1)
    rep = bench(cfg)
    res = {r.target.key: r for r in rep.results}
    ref, onnx32 = res["torch-fp32"], res["onnx-fp32"]
    assert ref.status == "ok" and onnx32.status == "ok", (ref.reason, onnx32.reason)
    assert ref.describe["device"] in ("cpu", "cuda") and onnx32.precision == "fp32"
    assert onnx32.parity["max_abs_dprob"] < 1e-4 and onnx32.parity["top1_agreement"] == 1.0
    assert onnx32.parity["n"] == 4 and onnx32.gate_failures == []
    assert sorted(onnx32.timings["compute"]) == [1, 2] and ref.timings["compute"][2].iterations >= 2
    if not torch.cuda.is_available():
        assert res["torch-fp16-graph"].status == "unavailable"
    assert res["onnx-int8"].status == "missing"
    assert (tmp_path / "b.json").is_file()
    # `bonedeploy infer` started on the real checkpoint (torch) and its ONNX file, one image each
    for row in (ref, onnx32):
        assert row.cold_start["runs"] == 1 and row.cold_start["median_s"] > 0, row.cold_start
    assert "--engine" in ref.cold_start["command"] and "best.pt" in ref.cold_start["command"]


def test_peak_rss_is_reset_per_artefact():
    from bonedeploy.bench import memory

    import mmap

    # Fresh pages from the OS and back to it on close: a numpy array may reuse an arena that an
    # earlier test left mapped, and then neither raises the peak nor lowers the current RSS.
    big = mmap.mmap(-1, 40 * 2**20)
    big.write(b"x" * len(big))  # 40 MiB touched
    before = memory.peak_rss_mb()
    big.close()
    if not memory.reset_peak_rss():
        pytest.skip("this OS cannot reset the peak RSS; the process-wide peak is reported instead")
    assert memory.peak_rss_mb() < before - 20
    assert memory.current_rss_mb() == pytest.approx(memory.peak_rss_mb(), abs=20)


def test_other_runtimes_can_be_left_out(tmp_path, monkeypatch):
    """OpenVINO twins of each ONNX row come only with other_runtimes (the demo's quick look)."""
    from bonedeploy.bench import runtimes

    (tmp_path / "model.onnx").write_bytes(b"x")
    monkeypatch.setattr(runtimes, "openvino_installed", lambda: True)
    with_twins = [t.key for t in runtimes.collect([tmp_path / "model.onnx"], None)]
    without = [t.key for t in runtimes.collect([tmp_path / "model.onnx"], None, other_runtimes=False)]
    assert "openvino-fp32" in with_twins and without == [k for k in with_twins if not k.startswith("openvino")]
