"""benchmarks/gpu_check.py: the one-command GPU check, its step runner and its CPU dry mode.

No GPU here: the cudamem round trip is exercised on a numpy stand-in for the CUDA binding (it
tests our copy-and-compare glue, not CUDA), and the dry run checks that the CUDA-only rows are
reported as skipped, never ok."""

from __future__ import annotations

import argparse
import importlib.util
import json
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "benchmarks" / "gpu_check.py"


def _load():
    spec = importlib.util.spec_from_file_location("gpu_check", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    sys.modules["gpu_check"] = mod  # dataclasses look their module up
    spec.loader.exec_module(mod)
    return mod


gc = _load()


class NumpyMem:
    """Stand-in for cudamem's CudaPython: "device" buffers are bytearrays. Tests our glue only."""

    name = "numpy-stand-in"

    def __init__(self, corrupt_at: int | None = None):
        self.dev: dict[int, bytearray] = {}
        self.corrupt_at = corrupt_at
        self.freed: list[str] = []

    def malloc(self, nbytes):
        ptr = 0x1000 + len(self.dev)
        self.dev[ptr] = bytearray(nbytes)
        return ptr

    def free(self, ptr):
        self.freed.append("dev")
        del self.dev[ptr]

    def host_empty(self, shape, dtype):
        return np.zeros(shape, dtype)

    def free_host(self, arr):
        self.freed.append("host")

    def stream_create(self):
        return "stream"

    def stream_destroy(self, stream):
        self.freed.append("stream")

    def htod_async(self, dst, src, nbytes, stream):
        self.dev[dst][:nbytes] = src.reshape(-1).view(np.uint8)[:nbytes].tobytes()

    def dtoh_async(self, dst, src, nbytes, stream):
        data = np.frombuffer(bytes(self.dev[src][:nbytes]), np.uint8).copy()
        if self.corrupt_at is not None and self.corrupt_at < nbytes:
            data[self.corrupt_at] ^= 0xFF
        dst.reshape(-1).view(np.uint8)[:nbytes] = data

    def synchronize(self, stream):
        pass


def test_cudamem_roundtrip_checks_bytes_and_partial_copies():
    mem = NumpyMem()
    r = gc.cudamem_roundtrip(mem, mib=1, rows=8)
    assert r["identical"] and r["partial_ok"] and r["mismatches"] == 0
    assert r["partial_rows"] == 4 and r["mib"] == pytest.approx(1.0)
    assert r["gb_per_s"] > 0
    assert sorted(mem.freed) == ["dev", "host", "host", "stream"] and not mem.dev


def test_cudamem_roundtrip_reports_a_changed_byte():
    r = gc.cudamem_roundtrip(NumpyMem(corrupt_at=12345), mib=1, rows=8)
    assert not r["identical"]
    assert r["mismatches"] == 1 and r["first_mismatch"] == 12345


def _check(tmp_path, dry=True, budget=60.0, has_cuda=False):
    args = argparse.Namespace(dry=dry, budget=budget, steps=None)
    log = open(tmp_path / "gpu_check.log", "w")
    c = gc.Check(args=args, sizes=gc.DRY if dry else gc.REAL, out=tmp_path, work=tmp_path / "work",
                 deadline=time.monotonic() + budget, log=log, has_cuda=has_cuda)
    c.state["t0"] = time.monotonic()
    return c


def test_a_failing_step_is_recorded_and_the_next_one_runs(tmp_path):
    ran = []

    def fails(c):
        ran.append("fails")
        raise gc.StepFailed("exit status 1", "line 1\nTraceback: the full error\n")

    def crashes(c):
        ran.append("crashes")
        raise ValueError("a bug in the step")

    def works(c):
        ran.append("works")
        return gc.Row("b-fp32", "", figure="1.0 s")

    def cuda(c):
        ran.append("cuda")
        return gc.Row("f-cudamem", "")

    steps = (gc.Step(("b-bf16",), "fails", fails, 10, 1), gc.Step(("g-fp32",), "crashes", crashes, 10, 1),
             gc.Step(("b-fp32",), "works", works, 10, 1),
             gc.Step(("f-cudamem",), "cuda", cuda, 10, 1, cuda_only=True))
    c = _check(tmp_path)
    rows: dict = {}
    gc.run_steps(c, {"b-bf16", "g-fp32", "b-fp32", "f-cudamem"}, rows, steps)
    assert ran == ["fails", "crashes", "works"]
    assert rows["b-bf16"].status == "failed" and "the full error" in rows["b-bf16"].error
    assert rows["g-fp32"].status == "failed" and "ValueError" in rows["g-fp32"].error
    assert rows["b-fp32"].status == "ok" and rows["b-fp32"].figure == "1.0 s"
    assert rows["f-cudamem"].status_text() == "skipped: no CUDA"
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert [s["id"] for s in summary["steps"]] == list(gc.ROW_ORDER)
    assert "the full error" in (tmp_path / "summary.md").read_text()


def test_budget_reserves_time_for_later_steps(tmp_path):
    """A step is skipped when what is left, minus the later steps' minimum, is below its own."""
    def works(c):
        return gc.Row("b-fp32", "")

    steps = (gc.Step(("b-bf16",), "big", works, 100, 50), gc.Step(("b-fp32",), "small", works, 10, 5))
    c = _check(tmp_path, dry=False, budget=30.0, has_cuda=True)
    rows: dict = {}
    gc.run_steps(c, {"b-bf16", "b-fp32"}, rows, steps)
    assert rows["b-bf16"].status == "skipped" and "out of time budget" in rows["b-bf16"].reason
    assert rows["b-fp32"].status == "ok"


def test_steps_option_takes_ids_and_prefixes():
    assert gc.selected_steps("b,f") == {"a", "b-bf16", "b-fp32", "f-cudamem"}
    assert gc.selected_steps(None) == set(gc.ROW_ORDER)
    with pytest.raises(SystemExit, match="valid: a, b-bf16"):
        gc.selected_steps("b,zz")


def test_timeout_stops_the_whole_process_group(tmp_path):
    code = ("import subprocess, sys, time\n"
            "p = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)'])\n"
            "print(p.pid, flush=True)\n"
            "time.sleep(60)\n")
    t0 = time.monotonic()
    with open(tmp_path / "main.log", "w") as main_log:
        rc, out, timed_out = gc.run_logged([sys.executable, "-c", code], 3, tmp_path / "x.log",
                                           main_log, "x", env=None)
    assert timed_out and time.monotonic() - t0 < 30
    grandchild = Path(f"/proc/{int(out.split()[0])}/status")
    time.sleep(0.5)
    assert not grandchild.exists() or "State:\tZ" in grandchild.read_text()
    assert "killed after 3 s" in (tmp_path / "x.log").read_text()


def test_work_folder_is_emptied_only_when_it_is_ours(tmp_path):
    work = tmp_path / "work"
    work.mkdir()
    (work / "precious.txt").write_text("x")
    with pytest.raises(SystemExit, match="not empty"):
        gc.prepare_work(work, tmp_path / "out")
    with pytest.raises(SystemExit, match="must not hold"):
        gc.prepare_work(tmp_path, tmp_path / "out")
    (work / gc.WORK_MARKER).write_text("")
    gc.prepare_work(work, tmp_path / "out")
    assert sorted(p.name for p in work.iterdir()) == [gc.WORK_MARKER]


# The full dry run (every step) takes 3-7 minutes on a busy 2-core machine, so the test runs the
# steps that train, export and infer once each, and the DDP step (torchrun at world size 1, gloo
# here); b (train_epoch.py) and d (gpu_torch.py) are left to `python benchmarks/gpu_check.py --dry`
# by hand.
DRY_STEPS = "a,c-synth,c1,e-export,e-compare,g,f,h"
CPU_OK = {"a", "c-synth", "c1-sweep", "e-export", "e-compare", "g-fp32", "h-ddp"}
CUDA_ONLY = {"f-cudamem", "g-fp16-graph"}


@pytest.mark.slow
def test_dry_run_end_to_end(tmp_path):
    torch = pytest.importorskip("torch")
    has_cuda = torch.cuda.is_available()
    out, work = tmp_path / "out", tmp_path / "work"
    proc = subprocess.run([sys.executable, str(SCRIPT), "--dry", "--steps", DRY_STEPS, "--out", str(out),
                           "--work", str(work)], cwd=REPO, capture_output=True, text=True, timeout=900)
    summary = json.loads((out / "summary.json").read_text())
    steps = {s["id"]: s for s in summary["steps"]}
    assert list(steps) == list(gc.ROW_ORDER), proc.stdout[-3000:]
    assert all(s["status"] in gc.STATUSES for s in steps.values())
    for sid in CPU_OK | (CUDA_ONLY if has_cuda else set()):
        assert steps[sid]["status"] == "ok", (sid, steps[sid]["reason"], steps[sid]["error"])
    if not has_cuda:
        for sid in CUDA_ONLY:
            assert (steps[sid]["status"], steps[sid]["reason"]) == ("skipped", "no CUDA")
    for sid in set(gc.ROW_ORDER) - CPU_OK - CUDA_ONLY:
        assert steps[sid]["reason"] == "not selected (--steps)"
    assert proc.returncode == 0, proc.stdout[-3000:]
    assert summary["dry"] is True and "DRY RUN" in (out / "summary.md").read_text()
    assert steps["g-fp32"]["figure"].startswith(f"{gc.DRY.n_images} images")
    with tarfile.open(out / "results-dry.tar.gz") as tar:
        names = tar.getnames()
    assert any(n.startswith("train/results/seed-synth8-dry-") and n.endswith(".md") for n in names)
    assert "logs/e-export.log" in names and not any(n.endswith((".pt", ".onnx")) for n in names)
    assert sorted(p.name for p in out.iterdir()) == ["gpu_check.log", "results-dry.tar.gz",
                                                     "summary.json", "summary.md"]


def test_train_epoch_markdown_without_the_naive_loop():
    """--no-naive (the check's second precision): no naive row, no ratio, no empty target table."""
    spec = importlib.util.spec_from_file_location("train_epoch", REPO / "benchmarks" / "train_epoch.py")
    te = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(te)
    ours = {"epoch_s": 0.5, "times_s": [0.5], "decode_once_s": 0.1, "n_train": 6, "n_val": 2,
            "runtime": {"device_name": "cpu", "precision": "fp32", "channels_last": False}}
    r = {"model": "vgg8", "command": "python benchmarks/train_epoch.py --no-naive", "quick": True,
         "batch_size": 4, "bonedeploy": ours, "naive": None, "ratio": None, "targets": [],
         "machine": {"cpu": "x", "cores": 2, "gpu": None, "versions": {}, "git_commit": None}}
    md = te.markdown(r)
    assert "Naive loop not run (--no-naive)" in md and "| naive" not in md
    assert "| target |" not in md and "| bonedeploy (decoded once" in md
    args = te.parse_args(["--quick", "--batch-size", "4", "--tag", "fp32", "--no-naive"])
    assert (args.n, args.batch_size, args.epochs, args.tag, args.no_naive) == (24, 4, 1, "fp32", True)
    assert (te.parse_args([]).n, te.parse_args([]).batch_size, te.parse_args([]).epochs) == (353, 32, 3)
