#!/usr/bin/env python
"""The whole GPU check in one command: every CUDA path of bonedeploy, through its own CLI and scripts.

Steps (row ids of the summary; each has its own timeout inside one time budget, a failing step is
recorded with its full output and the next one runs):

  a             install the project (+ .whl/*.whl) into a --target folder; versions, GPU
  c-synth       ``bonedeploy synth``: the seed-sized synthetic set (353 images)
  b-bf16/fp32   ``benchmarks/train_epoch.py`` on CUDA: AlexNet seconds per epoch, bf16 vs fp32
  d-*           ``benchmarks/gpu_torch.py``: torch backend fp32, fp16, fp16 + CUDA graph, batch 1/8/128
  f-cudamem     host -> device -> host through ``bonedeploy.backends.cudamem`` on a stream
  c1, c2        ``bonedeploy sweep train/seed.toml``: the selected AlexNet first, then the rest
  e-export      ``bonedeploy export`` of the selected run
  e-bench       ``bonedeploy bench`` on that run
  e-compare     ``bonedeploy compare``: the run's ``best.pt`` on the check's device against its fp16
                ONNX (fp32 in --dry), layer by layer, with each flipped decision
  g-*           ``bonedeploy infer`` with the torch backend over the synthetic set
  h-ddp         ``benchmarks/ddp.py``: one process against ``torchrun --nproc-per-node 1`` (DDP,
                NCCL on CUDA) on the synthetic set: the DDP path at world size 1, epoch time and accuracy

They run in that order: the selected AlexNet is trained on its own first, so that export, bench
and infer never wait on (or are starved by) the other seven runs, which take what time is left.

``--dry`` runs the same steps at toy sizes (8 images, vgg8, 1 epoch; a few minutes on 2 CPU cores); on a
machine without CUDA the CUDA-only rows say "skipped: no CUDA". A dry run measures nothing.

    timeout 540 bash benchmarks/gpu_check.sh            # on the GPU machine; results in $OUT
    python benchmarks/gpu_check.py --dry --out /tmp/gc   # anywhere (CPU)
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import tarfile
import threading
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

STATUSES = ("ok", "failed", "skipped")
NO_CUDA = "no CUDA"
SELECTED_DRY = "vgg8"
SWEEP_RECIPE = REPO / "train" / "seed.toml"
WORK_MARKER = ".bonedeploy-gpu-check"

# Targets from an H100 measured earlier with plain PyTorch (benchmarks/README.md).
TARGET_EPOCH_S = 0.25
TARGET_SWEEP_S = 180.0
TARGET_GRAPH_B1_MS = 0.35
TARGET_GRAPH_B128_IPS = 30_000.0


class StepFailed(Exception):
    """A step ran and did not do its job; ``output`` is what it printed (the full error)."""

    def __init__(self, message: str, output: str = "", figure: str = ""):
        super().__init__(message)
        self.output = output
        self.figure = figure  # what the step did find out (e.g. the versions), kept in the summary


class StepSkipped(Exception):
    """A step that cannot run here (no CUDA, a missing input); the message is the reason."""


@dataclass
class Row:
    id: str
    title: str
    status: str = "skipped"
    reason: str | None = None
    seconds: float = 0.0
    figure: str = ""
    target: str = ""
    verdict: str = ""
    error: str | None = None
    log: str | None = None
    details: dict[str, Any] = field(default_factory=dict)

    def status_text(self) -> str:
        return f"{self.status}: {self.reason}" if self.reason else self.status


@dataclass(frozen=True)
class Sizes:
    """What each step is given: the real check, or toy sizes for --dry."""

    n_images: int
    train_model: str
    train_args: tuple[str, ...]
    torch_model: str
    torch_args: tuple[str, ...]
    selected: str | None  # None: the recipe's selected AlexNet
    sweep_args: tuple[str, ...]
    rest_only: str | None  # --only for the second sweep part; None: the whole recipe
    export_args: tuple[str, ...]
    bench_args: tuple[str, ...]
    infer_batch: int
    workers: tuple[str, ...]
    cudamem_mib: int
    ddp_args: tuple[str, ...] = ("--epochs", "3")  # benchmarks/ddp.py; the first epoch is warm-up
    compare_args: tuple[str, ...] = ("--parity-n", "64")


REAL = Sizes(
    n_images=353, train_model="alexnet_d08_wd1e-3", train_args=("--epochs", "2"),
    torch_model="alexnet_d08_wd1e-3",
    torch_args=("--batch-sizes", "1,8,128", "--duration", "1", "--min-iters", "10"),
    selected=None, sweep_args=(), rest_only=None,
    export_args=("--precision", "fp32,fp16"),
    bench_args=("--batch-sizes", "1,8,32", "--duration", "0.5", "--min-iters", "5", "--mode", "both"),
    infer_batch=32, workers=(), cudamem_mib=128,
)
DRY = Sizes(
    n_images=8, train_model=SELECTED_DRY,
    train_args=("--quick", "--batch-size", "4", "--epochs", "1"),
    torch_model=SELECTED_DRY,
    torch_args=("--batch-sizes", "1", "--duration", "0.05", "--warmup", "0.05", "--min-iters", "2",
                "--parity-n", "4"),
    selected=SELECTED_DRY, sweep_args=("--epochs", "1", "--batch-size", "4"), rest_only=SELECTED_DRY,
    # fp32 only: the dry vgg8 (one epoch on 8 images) has an OOD gate fitted on 8 feature
    # vectors, whose fp16 scores rightly fail the export's OOD gate; fp16 export is tested in tests/
    export_args=("--precision", "fp32", "--parity-n", "4"),
    bench_args=("--batch-sizes", "1", "--duration", "0.05", "--warmup", "0.05", "--min-iters", "2",
                "--mode", "both", "--parity-n", "4"),
    infer_batch=4, workers=("--workers", "1"), cudamem_mib=4,
    ddp_args=("--epochs", "2", "--batch-size", "4"), compare_args=("--parity-n", "4"),
)


@dataclass
class Check:
    """Everything the steps share: options, folders, the child environment, what earlier steps made."""

    args: argparse.Namespace
    sizes: Sizes
    out: Path
    work: Path
    deadline: float
    log: Any  # the open gpu_check.log
    env: dict[str, str] = field(default_factory=dict)
    state: dict[str, Any] = field(default_factory=dict)
    has_cuda: bool = False
    slug: str = "unknown"
    limit: float = 0.0    # the running step's own limit
    reserve: float = 0.0  # seconds kept for the steps after it

    @property
    def results(self) -> Path:
        return self.work / "results"

    @property
    def logs(self) -> Path:
        return self.results / "logs"

    @property
    def site(self) -> Path:
        return self.work / "site"

    @property
    def device(self) -> str:
        return "cuda" if self.has_cuda else "cpu"

    def say(self, text: str) -> None:
        print(text, flush=True)
        self.log.write(text + "\n")
        self.log.flush()

    def remaining(self) -> float:
        return self.deadline - time.monotonic()

    def cli(self, *args: str) -> list[str]:
        """``bonedeploy ARGS``: the installed package's CLI, run by this interpreter."""
        return [sys.executable, "-m", "bonedeploy", *args]

    def script(self, name: str, *args: str) -> list[str]:
        return [sys.executable, str(REPO / "benchmarks" / name), *args]

    def run(self, row_id: str, argv: list[str], timeout: float, ok_codes: tuple[int, ...] = (0,)) -> str:
        """Run one command with its own log; its output also goes to gpu_check.log as it comes."""
        log_path = self.logs / f"{row_id}.log"
        self.say(f"  $ {shlex.join(str(a) for a in argv)}   (timeout {timeout:.0f} s)")
        rc, output, timed_out = run_logged(argv, timeout, log_path, self.log, row_id, self.env)
        if timed_out:
            raise StepFailed(f"timed out after {timeout:.0f} s", output)
        if rc not in ok_codes:
            raise StepFailed(f"exit status {rc}", output)
        return output


def run_logged(argv: list[str], timeout: float, log_path: Path, main_log: Any, prefix: str,
               env: dict[str, str]) -> tuple[int, str, bool]:
    """(exit status, output, timed out). The command gets its own process group, so a timeout
    stops its workers too: SIGINT first (training says which epoch it saved), then SIGKILL."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    lines: list[str] = []
    with open(log_path, "w", encoding="utf-8", errors="replace") as f:
        f.write(f"$ {shlex.join(str(a) for a in argv)}\n")
        proc = subprocess.Popen([str(a) for a in argv], stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env,
                                cwd=REPO, start_new_session=True, text=True, errors="replace")

        def pump() -> None:
            for line in proc.stdout:
                lines.append(line)
                f.write(line)
                f.flush()
                main_log.write(f"[{prefix}] {line}")
                main_log.flush()

        reader = threading.Thread(target=pump, daemon=True)
        reader.start()
        timed_out = False
        try:
            proc.wait(timeout=max(timeout, 1.0))
        except subprocess.TimeoutExpired:
            timed_out = True
            stop_group(proc)
        except BaseException:  # SIGTERM/Ctrl-C of the whole check: leave nothing running
            stop_group(proc)
            raise
        finally:
            reader.join(timeout=10)
        if timed_out:
            f.write(f"\n[gpu_check] killed after {timeout:.0f} s\n")
    return proc.returncode, "".join(lines), timed_out


def stop_group(proc: subprocess.Popen) -> None:
    for sig, wait_s in ((signal.SIGINT, 10), (signal.SIGKILL, 10)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=wait_s)
            return
        except subprocess.TimeoutExpired:
            continue


def tail(text: str, lines: int = 40) -> str:
    return "\n".join(text.rstrip().splitlines()[-lines:])


def read_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise StepFailed(f"{path.name}: not written or not JSON ({e})") from e


def one(folder: Path, pattern: str) -> Path:
    found = sorted(folder.glob(pattern))
    if not found:
        raise StepFailed(f"no {pattern} in {folder}")
    return found[-1]


def verdict(measured: float | None, op: str, goal: float, dry: bool) -> str:
    if dry:
        return "n/a (dry)"
    if measured is None:
        return "not measured"
    return "PASS" if (measured <= goal if op == "<=" else measured >= goal) else "FAIL"


# ---------------------------------------------------------------------------------------- steps


def step_install(c: Check) -> Row:
    """Wheels first (what the image lacks), then the project itself, both into one --target folder."""
    pip = [sys.executable, "-m", "pip", "install", "-q", "--no-index", "--no-deps", "--no-compile",
           "--no-cache-dir", "--upgrade", "--target", str(c.site)]
    # the checkout first: the code under test is the working tree, the install adds its metadata,
    # the console script and the wheels
    c.env["PYTHONPATH"] = os.pathsep.join(
        [str(REPO), str(c.site), *filter(None, [os.environ.get("PYTHONPATH")])])
    c.env["PATH"] = os.pathsep.join([str(c.site / "bin"), c.env.get("PATH", "")])
    wheels = sorted((REPO / ".whl").glob("*.whl"))
    notes, failures = [], []
    if wheels:
        notes.append(f"{len(wheels)} wheels: " + ", ".join(w.name.split("-")[0] for w in wheels))
    installs = [("a", [str(w) for w in wheels])] if wheels else []
    installs.append(("a-project", ["--no-build-isolation", str(copy_project(c.work / "src"))]))
    for log_id, what in installs:  # a failed install is reported; the checkout may still import
        try:
            c.run(log_id, pip + what, timeout=min(90, c.remaining()))
        except StepFailed as e:
            failures.append(e)
    probe = c.work / "probe.py"
    probe.write_text(PROBE)
    out = c.run("a-versions", [sys.executable, str(probe)], timeout=min(60, c.remaining()))
    facts = json.loads(out.strip().splitlines()[-1])
    facts["nvidia_smi"] = nvidia_smi()
    c.has_cuda = bool(facts.get("cuda_available"))
    c.state["facts"] = facts
    for line in describe_facts(facts):
        c.say("  " + line)
    row = Row("a", "", figure=f"torch {facts.get('torch')}, CUDA {facts.get('torch_cuda')}, "
                              f"{facts.get('gpu') or 'no GPU'}", details={"facts": facts, "notes": notes})
    if not c.has_cuda and not c.args.dry:
        raise StepFailed("no CUDA GPU visible to torch: the full check needs one (--dry runs it on "
                         "the CPU)", json.dumps(facts, indent=2), row.figure)
    if failures:
        raise StepFailed("pip install failed: " + "; ".join(str(e) for e in failures),
                         "\n".join(e.output for e in failures), row.figure)
    return row


def copy_project(dest: Path) -> Path:
    if dest.exists():
        shutil.rmtree(dest)
    dest.mkdir(parents=True)
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(REPO / name, dest / name)
    shutil.copytree(REPO / "bonedeploy", dest / "bonedeploy",
                    ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    return dest


PROBE = r"""
import json, importlib, platform
from importlib.metadata import version, PackageNotFoundError
def v(name):
    try:
        return version(name)
    except PackageNotFoundError:
        return None
f = {"python": platform.python_version()}
for name in ("bonedeploy", "torch", "torchvision", "onnx", "onnxruntime", "onnxscript", "onnx-ir",
             "onnxconverter-common", "cuda-bindings", "cuda-python", "numpy", "typer", "rich",
             "scikit-learn", "pydicom", "tensorrt"):
    f[name] = v(name)
import bonedeploy
f["bonedeploy_file"] = bonedeploy.__file__
import torch
f["torch"] = torch.__version__
f["torch_cuda"] = torch.version.cuda
f["cuda_available"] = torch.cuda.is_available()
if f["cuda_available"]:
    p = torch.cuda.get_device_properties(0)
    f.update(gpu=torch.cuda.get_device_name(0), capability=f"{p.major}.{p.minor}",
             gpu_memory_gib=round(p.total_memory / 2**30, 1), sms=p.multi_processor_count,
             bf16=torch.cuda.is_bf16_supported(), cudnn=torch.backends.cudnn.version())
try:
    import onnxruntime as ort
    f["ort_providers"] = ort.get_available_providers()
except Exception as e:
    f["ort_providers"] = f"error: {e}"
try:
    from cuda.bindings import runtime as rt
    err, n = rt.cudaGetDeviceCount()
    f["cuda_bindings_devices"] = int(n) if int(err) == 0 else f"error {err}"
except Exception as e:
    f["cuda_bindings_devices"] = f"unavailable: {e}"
print(json.dumps(f))
"""


def nvidia_smi() -> str | None:
    try:
        return subprocess.run(["nvidia-smi", "--query-gpu=name,driver_version,memory.total,"
                               "compute_cap,clocks.max.sm", "--format=csv,noheader"],
                              capture_output=True, text=True, timeout=15).stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def describe_facts(f: dict[str, Any]) -> list[str]:
    return [
        f"python {f.get('python')}, bonedeploy {f.get('bonedeploy')} from {f.get('bonedeploy_file')}",
        f"torch {f.get('torch')} (CUDA {f.get('torch_cuda')}, cuDNN {f.get('cudnn')}), torchvision "
        f"{f.get('torchvision')}, onnx {f.get('onnx')}, onnxruntime {f.get('onnxruntime')} "
        f"{f.get('ort_providers')}, onnxscript {f.get('onnxscript')}, onnxconverter-common "
        f"{f.get('onnxconverter-common')}, cuda-bindings {f.get('cuda-bindings')}",
        f"GPU via torch: {f.get('gpu') or 'none'}"
        + (f" (sm {f.get('capability')}, {f.get('gpu_memory_gib')} GiB, {f.get('sms')} SMs, "
           f"bf16 {f.get('bf16')})" if f.get("gpu") else ""),
        f"GPU via nvidia-smi: {f.get('nvidia_smi') or 'not found'}",
    ]


def step_synth(c: Check) -> Row:
    data = c.work / "data" / f"synth{c.sizes.n_images}"
    c.run("c-synth", c.cli("synth", str(data), "--n", str(c.sizes.n_images), "--seed", "0", "-q",
                           *c.sizes.workers), timeout=step_timeout(c))
    n = sum(1 for _ in data.rglob("*.png"))
    if n != c.sizes.n_images:
        raise StepFailed(f"expected {c.sizes.n_images} images in {data}, found {n}")
    c.state["data"] = data
    return Row("c-synth", "", figure=f"{n} images in {data.name}")


def train_epoch_step(precision: str, naive: bool) -> Callable[[Check], Row]:
    def step(c: Check) -> Row:
        row_id = f"b-{precision}"
        dest = c.results / "benchmarks" / "results"
        c.run(row_id, c.script("train_epoch.py", "--model", c.sizes.train_model, "--data",
                               str(need(c, "data")), "--device", c.device, "--precision", precision,
                               "--tag", precision, "--out", str(dest), *c.sizes.train_args,
                               *([] if naive else ["--no-naive"])), timeout=step_timeout(c))
        r = read_json(one(dest, f"train_epoch-*-{precision}.json"))
        ours, other = r["bonedeploy"], r.get("naive")
        epoch = ours["epoch_s"]
        c.state[f"epoch_{precision}"] = epoch
        fig = f"{r['model']} epoch {epoch:.3f} s ({ours['runtime']['device_name']}, {ours['runtime']['precision']})"
        if other:
            fig += f"; naive loop {other['epoch_s']:.3f} s ({r['ratio']:.1f}x)"
        if precision == "fp32" and "epoch_bf16" in c.state:
            fig += f"; bf16 speed-up {epoch / c.state['epoch_bf16']:.2f}x"
        row = Row(row_id, "", figure=fig, details={"result": r})
        if precision == "bf16":
            row.target = f"AlexNet epoch <= {TARGET_EPOCH_S} s (H100)"
            row.verdict = verdict(epoch, "<=", TARGET_EPOCH_S, c.args.dry)
        return row

    return step


TORCH_ROWS = {"d-fp32": "torch-fp32", "d-fp16": "torch-fp16", "d-fp16-graph": "torch-fp16-graph"}
CUDA_ROWS = {"d-fp16", "d-fp16-graph", "f-cudamem", "g-fp16-graph"}


def step_gpu_torch(c: Check) -> list[Row]:
    dest = c.results / "benchmarks" / "results"
    c.run("d", c.script("gpu_torch.py", "--model", c.sizes.torch_model, "--out", str(dest),
                        "--allow-cpu", *c.sizes.torch_args), timeout=step_timeout(c))
    d = read_json(one(dest, "*-torch.json"))
    by_key = {r["key"]: r for r in d["results"]}
    rows = []
    for row_id, key in TORCH_ROWS.items():
        r = by_key.get(key) or {"status": "missing", "reason": "no row"}
        row = Row(row_id, "", details={"row": {k: r.get(k) for k in ("status", "reason", "timings")}})
        if r["status"] == "ok":
            row.status = "ok"
            row.figure = timing_figure(r)
        elif row_id in CUDA_ROWS and not c.has_cuda:
            row.status, row.reason = "skipped", NO_CUDA
        else:
            row.status, row.reason = "failed", f"{r['status']}: {r.get('reason')}"
        if row_id == "d-fp16-graph":
            row.target = (f"batch 1 p50 <= {TARGET_GRAPH_B1_MS} ms, batch 128 >= "
                          f"{TARGET_GRAPH_B128_IPS:,.0f} img/s (H100)")
            b1, b128 = timing(r, 1, "p50_ms"), timing(r, 128, "images_per_s")
            verdicts = [verdict(b1, "<=", TARGET_GRAPH_B1_MS, c.args.dry),
                        verdict(b128, ">=", TARGET_GRAPH_B128_IPS, c.args.dry)]
            row.verdict = verdicts[0] if len(set(verdicts)) == 1 else " / ".join(verdicts)
        rows.append(row)
    return rows


def timing(r: dict[str, Any], bs: int, key: str) -> float | None:
    t = ((r.get("timings") or {}).get("compute") or {}).get(str(bs))
    return t.get(key) if t else None


def timing_figure(r: dict[str, Any]) -> str:
    per = (r.get("timings") or {}).get("compute") or {}
    return "; ".join(f"b{bs}: {t['p50_ms']:.3g} ms, {t['images_per_s']:,.0f} img/s"
                     for bs, t in sorted(per.items(), key=lambda kv: int(kv[0])))


def step_cudamem(c: Check) -> Row:
    out = c.run("f-cudamem", [sys.executable, str(Path(__file__).resolve()), "cudamem", "--mib",
                              str(c.sizes.cudamem_mib)], timeout=step_timeout(c))
    r = json.loads(out.strip().splitlines()[-1])
    if not r["identical"]:
        raise StepFailed(f"round trip changed {r['mismatches']} bytes (first at {r['first_mismatch']})", out)
    return Row("f-cudamem", "", figure=(
        f"{r['binding']}: {r['mib']} MiB pinned H2D+D2H on a stream byte-identical, "
        f"{r['gb_per_s']:.1f} GB/s; partial copy of {r['partial_rows']} rows left the rest untouched"),
        details=r)


def sweep_step(part: int) -> Callable[[Check], Row]:
    """Part 1: the selected run alone; part 2: the whole recipe (part 1's run is skipped as done)."""

    def step(c: Check) -> Row:
        from bonedeploy.models.alexnet import SELECTED

        row_id = f"c{part}-sweep"
        runs = c.work / "runs" / "seed"
        selected = c.sizes.selected or SELECTED
        only = selected if part == 1 else c.sizes.rest_only
        argv = c.cli("sweep", str(SWEEP_RECIPE), str(need(c, "data")), "--out", str(runs), "--quiet",
                     "--device", c.device, *c.sizes.sweep_args, *(["--only", only] if only else []))
        timeout = step_timeout(c, reserve=0 if part == 1 else 15)
        t0 = time.monotonic()
        try:
            c.run(row_id, argv, timeout=timeout)
        except StepFailed as e:
            if part == 2 and "timed out" in str(e):
                table_of_finished(c, runs)  # the table of what finished, so the time is not lost
            raise
        finally:
            c.state[f"sweep{part}_s"] = time.monotonic() - t0
            copy_sweep(c, runs)
        wall = time.monotonic() - t0
        sweep = read_json(runs / "sweep.json")
        done = [r for r in sweep["rows"] if r.get("status") == "done"]
        if part == 1:
            best = runs / selected / "best.pt"
            if not best.is_file():
                raise StepFailed(f"{best} not written")
            c.state["run"] = runs / selected
            return Row(row_id, "", figure=f"{selected}: {wall:.1f} s wall", details={"sweep": sweep})
        total = c.state.get("sweep1_s", 0.0) + wall
        n_recipe = len(sweep["rows"]) if c.sizes.rest_only else count_recipe_runs()
        row = Row(row_id, "", figure=(f"{len(done)}/{n_recipe} runs done; sweep wall {total:.1f} s "
                                      f"(c1 {c.state.get('sweep1_s', 0):.1f} + c2 {wall:.1f})"),
                  details={"sweep": sweep, "wall_s": total})
        row.target = f"all eight seed runs <= {TARGET_SWEEP_S:.0f} s (H100)"
        row.verdict = verdict(total if len(done) == 8 else None, "<=", TARGET_SWEEP_S, c.args.dry)
        return row

    return step


def count_recipe_runs() -> int:
    from bonedeploy.training.sweep import load_recipe

    return len(load_recipe(SWEEP_RECIPE))


def table_of_finished(c: Check, runs: Path) -> None:
    """After a timeout: rerun the sweep over the runs that finished, which only writes the table."""
    finished = [p.name for p in sorted(runs.iterdir()) if (p / "report.json").is_file()] if runs.is_dir() else []
    if finished and c.remaining() > 10:
        try:
            c.run("c2-table", c.cli("sweep", str(SWEEP_RECIPE), str(need(c, "data")), "--out", str(runs),
                                    "--quiet", "--device", c.device, *c.sizes.sweep_args,
                                    "--only", ",".join(finished)), timeout=c.remaining() - 5)
        except StepFailed as e:
            c.say(f"  (table of the finished runs not written: {e})")


def copy_sweep(c: Check, runs: Path) -> None:
    """results.md/csv as train/results/seed-<data>-<machine>.*, plus each run's small files."""
    dest = c.results / "train" / "results"
    name = f"seed-synth{c.sizes.n_images}" + ("-dry" if c.args.dry else "") + f"-{c.slug}"
    for suffix in (".md", ".csv"):
        src = runs / f"results{suffix}"
        if src.is_file():
            dest.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / f"{name}{suffix}")
    copy_small(runs, c.results / "runs" / "seed")


def copy_small(src: Path, dest: Path, limit: int = 4 << 20) -> None:
    """Reports, metrics, tables and plots; never checkpoints or ONNX files."""
    if not src.is_dir():
        return
    for p in src.rglob("*"):
        if p.is_file() and p.suffix in (".json", ".md", ".csv", ".png", ".txt") and p.stat().st_size <= limit:
            target = dest / p.relative_to(src)
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(p, target)


def step_export(c: Check) -> Row:
    run = need(c, "run")
    try:
        c.run("e-export", c.cli("export", str(run / "best.pt"), "--no-trt", *c.sizes.export_args),
              timeout=step_timeout(c))
    finally:
        for p in run.glob("export*"):
            if p.suffix in (".json", ".md"):
                (c.results / "runs" / "export").mkdir(parents=True, exist_ok=True)
                shutil.copy2(p, c.results / "runs" / "export" / p.name)
    made = sorted(p.name for p in run.glob("*.onnx"))
    if not made:
        raise StepFailed(f"no ONNX file in {run}")
    c.state["exported"] = made
    return Row("e-export", "", figure=", ".join(made))


def step_bench(c: Check) -> Row:
    run = need(c, "run")
    base = c.results / "benchmarks" / "results" / f"bench-{c.slug}"
    try:
        c.run("e-bench", c.cli("bench", "--dir", str(run), "--json", f"{base}.json", "--md", f"{base}.md",
                               "--plot", f"{base}.png", *c.sizes.bench_args), timeout=step_timeout(c))
    except StepFailed as e:
        if not Path(f"{base}.json").is_file():
            raise
        # exit 2 (a parity gate failed) still wrote the report: say which rows, with the output
        raise StepFailed(f"{e}; rows: {bench_rows(read_json(Path(f'{base}.json')))}", e.output) from e
    d = read_json(Path(f"{base}.json"))
    return Row("e-bench", "", figure=bench_rows(d), details={"rows": {
        r["key"]: {"status": r["status"], "reason": r.get("reason")} for r in d["results"]}})


def bench_rows(d: dict[str, Any]) -> str:
    parts = []
    for r in d["results"]:
        t = timing(r, 1, "p50_ms")
        parts.append(f"{r['key']} {r['status']}" + (f" {t:.3g} ms@b1" if t is not None else ""))
    return ", ".join(parts)


def infer_step(mode: str) -> Callable[[Check], Row]:
    def step(c: Check) -> Row:
        from bonedeploy.infer.run import EXIT_REFUSED  # images the OOD gate refused: the run worked

        row_id = f"g-{mode}"
        run = need(c, "run")
        preds = c.results / "runs" / "infer" / f"preds-{mode}.csv"
        extra = ["--precision", "fp16", "--cuda-graph"] if mode == "fp16-graph" else []
        out = c.run(row_id, c.cli("infer", str(need(c, "data")), "--engine", str(run / "best.pt"),
                                  "--backend", "torch", "--device", c.device, "-b",
                                  str(c.sizes.infer_batch), "--out", str(preds), *extra,
                                  *c.sizes.workers), timeout=step_timeout(c), ok_codes=(0, EXIT_REFUSED))
        rows = preds.read_text().strip().splitlines()[1:] if preds.is_file() else []
        refused = sum(",rejected: out of distribution" in r for r in rows)
        if len(rows) != c.sizes.n_images:
            raise StepFailed(f"{preds.name}: {len(rows)} rows for {c.sizes.n_images} images", out)
        m = re.search(r"\(([\d.]+) images/s\)", out)
        metrics = preds.with_name(preds.stem + ".metrics.json")
        acc = read_json(metrics).get("accuracy") if metrics.is_file() else None
        fig = f"{len(rows)} images" + (f", {float(m.group(1)):,.0f} img/s" if m else "") + \
              (f", accuracy {acc:.3f}" if isinstance(acc, (int, float)) else "") + \
              f", {refused} refused by the OOD gate (ood_score computed on {c.device})"
        return Row(row_id, "", figure=fig)

    return step


def step_compare(c: Check) -> Row:
    """The .pt on the check's device against the fp16 ONNX (the dry run exports fp32 only)."""
    run = need(c, "run")
    cand = "model.fp16.onnx" if (run / "model.fp16.onnx").is_file() else "model.onnx"
    out = c.results / "runs" / "compare"
    c.run("e-compare", c.cli("compare", str(run / "best.pt"), str(run / cand), "--device", c.device,
                             "--out", str(out), *c.sizes.compare_args), timeout=step_timeout(c))
    r = read_json(out / "compare.json")
    first = (r.get("first_crossing") or {}).get("layer")
    fig = (f"best.pt on {c.device} vs {cand}: {len(r['layers'])} layers, first below tolerance: "
           f"{first if first is not None else 'none'}; {r['decisions']['flips']} decision flip(s)")
    return Row("e-compare", "", figure=fig, details={"first_crossing": r.get("first_crossing"),
                                                     "decisions": r["decisions"]})


def step_ddp(c: Check) -> Row:
    """DDP at world size 1 under torchrun (NCCL on CUDA, gloo without): the path a multi-GPU run
    takes, against one plain process on the same data."""
    dest = c.results / "benchmarks" / "results"
    tag = "dry" if c.args.dry else c.device
    c.run("h-ddp", c.script("ddp.py", "--model", c.sizes.train_model, "--data", str(need(c, "data")),
                            "--device", c.device, "--nproc", "1", "--tag", tag, "--out", str(dest),
                            *c.sizes.ddp_args), timeout=step_timeout(c))
    r = read_json(one(dest, f"ddp-*-{tag}.json"))
    single, ddp = r["runs"]
    backend = (ddp["runtime"].get("distributed") or {}).get("backend")
    fig = (f"{r['model']} epoch {single['epoch_median_s']:.3f} s (1 process) vs {ddp['epoch_median_s']:.3f} s "
           f"(torchrun, world size 1, {backend}); val acc {single['final_val_acc']:.3f} vs {ddp['final_val_acc']:.3f}")
    return Row("h-ddp", "", figure=fig, details={"result": r})


def need(c: Check, key: str) -> Any:
    if key not in c.state:
        maker = {"data": "c-synth", "run": "c1-sweep"}.get(key, key)
        raise StepSkipped(f"needs the output of {maker}, which did not produce it")
    return c.state[key]


@dataclass(frozen=True)
class Step:
    rows: tuple[str, ...]  # summary rows it fills; the first names its log
    title: str
    run: Callable[[Check], Row | list[Row]]
    timeout_s: float  # the most it may take (the real check); --dry: dry_timeout_s
    min_s: float      # reserved for it while earlier steps run; below this left, it is skipped
    dry_timeout_s: float = 120
    cuda_only: bool = False


# Execution order. The summary lists the rows in ROW_ORDER.
STEPS: tuple[Step, ...] = (
    Step(("a",), "install + versions", step_install, 150, 20),
    Step(("c-synth",), "bonedeploy synth (seed-sized set)", step_synth, 90, 10),
    Step(("b-bf16",), "train_epoch.py bf16 (+ naive loop)", train_epoch_step("bf16", True), 100, 30),
    Step(("b-fp32",), "train_epoch.py fp32", train_epoch_step("fp32", False), 80, 20),
    Step(tuple(TORCH_ROWS), "gpu_torch.py fp32 / fp16 / fp16 + graph", step_gpu_torch, 100, 30),
    Step(("f-cudamem",), "cudamem round trip", step_cudamem, 60, 10, cuda_only=True),
    Step(("c1-sweep",), "sweep: the selected run (AlexNet; --dry: vgg8)", sweep_step(1), 120, 30),
    Step(("e-export",), "bonedeploy export (selected run)", step_export, 150, 40),
    Step(("e-bench",), "bonedeploy bench (selected run)", step_bench, 150, 40),
    Step(("e-compare",), "bonedeploy compare (.pt on the device vs fp16 ONNX)", step_compare, 120, 20),
    Step(("g-fp32",), "bonedeploy infer torch fp32", infer_step("fp32"), 60, 20),
    Step(("g-fp16-graph",), "bonedeploy infer torch fp16 + CUDA graph", infer_step("fp16-graph"),
         60, 20, cuda_only=True),
    Step(("h-ddp",), "ddp.py: one process vs torchrun --nproc-per-node 1", step_ddp, 120, 30),
    Step(("c2-sweep",), "sweep: the other seven runs + results table", sweep_step(2), 420, 30),
)
ROW_TITLES = {
    "a": "install + versions", "b-bf16": "train epoch, bf16", "b-fp32": "train epoch, fp32",
    "c-synth": "synthetic set", "c1-sweep": "sweep: the selected run", "c2-sweep": "sweep: all runs",
    "d-fp32": "torch backend fp32", "d-fp16": "torch backend fp16",
    "d-fp16-graph": "torch backend fp16 + CUDA graph", "e-export": "export (ONNX)",
    "e-bench": "bench (selected run)", "e-compare": "compare (.pt on the device vs ONNX)", "f-cudamem": "cudamem round trip", "g-fp32": "infer, torch fp32",
    "g-fp16-graph": "infer, torch fp16 + graph", "h-ddp": "DDP (torchrun, world size 1)",
}
ROW_ORDER = ("a", "b-bf16", "b-fp32", "c-synth", "c1-sweep", "c2-sweep", "d-fp32", "d-fp16",
             "d-fp16-graph", "e-export", "e-bench", "e-compare", "f-cudamem", "g-fp32", "g-fp16-graph", "h-ddp")


def step_timeout(c: Check, reserve: float = 0) -> float:
    """The step's own limit, cut to what the budget leaves after the later steps' reservations."""
    return max(1.0, min(c.limit, c.remaining() - c.reserve - reserve))


def selected_steps(spec: str | None) -> set[str]:
    """``--steps a,b,e``: row ids or their prefixes; unknown names list the valid ones."""
    rows = {r for s in STEPS for r in s.rows}
    if not spec:
        return rows
    chosen: set[str] = set()
    for name in (s.strip() for s in spec.split(",") if s.strip()):
        hits = {r for r in rows if r == name or r.startswith(name)}
        if not hits:
            raise SystemExit(f"--steps: unknown step {name!r}; valid: {', '.join(ROW_ORDER)} "
                             "(or a prefix such as b, c, d)")
        chosen |= hits
    return chosen | {"a"}  # every other step needs the install and the versions


def run_steps(c: Check, chosen: set[str], rows: dict[str, Row],
              steps: tuple[Step, ...] | None = None) -> None:
    """Fills ``rows`` as the steps end (the caller keeps them when the check is interrupted)."""
    steps = STEPS if steps is None else steps
    blocked: str | None = None
    for i, step in enumerate(steps):
        ids = step.rows
        limit = step.dry_timeout_s if c.args.dry else step.timeout_s
        later = [s for s in steps[i + 1:] if set(s.rows) & chosen]
        reserve = sum(s.min_s for s in later if not (s.cuda_only and not c.has_cuda))
        reason = None
        if not set(ids) & chosen:
            reason = "not selected (--steps)"
        elif blocked:
            reason = blocked
        elif step.cuda_only and not c.has_cuda:
            reason = NO_CUDA
        elif c.remaining() - reserve < step.min_s and not c.args.dry:
            reason = f"out of time budget ({c.remaining():.0f} s left, {reserve:.0f} s reserved for later steps)"
        if reason:
            for r in ids:
                rows[r] = Row(r, ROW_TITLES[r], status="skipped", reason=reason)
            c.say(f"[{ids[0]}] {step.title}: skipped: {reason}")
            write_summary(c, rows)
            continue
        c.say(f"[{ids[0]}] {step.title} ({c.remaining():.0f} s of the budget left)")
        c.limit, c.reserve = limit, 0 if c.args.dry else reserve
        t0 = time.monotonic()
        try:
            got = step.run(c)
            got = got if isinstance(got, list) else [got]
            for r in got:
                r.title = r.title or ROW_TITLES[r.id]
                if r.status == "skipped" and r.reason is None:
                    r.status = "ok"
        except StepSkipped as e:
            got = [Row(r, ROW_TITLES[r], status="skipped", reason=str(e)) for r in ids]
        except StepFailed as e:
            got = [Row(r, ROW_TITLES[r], status="failed", reason=str(e), error=tail(e.output, 80),
                       figure=e.figure) for r in ids]
        except KeyboardInterrupt as e:  # SIGTERM from `timeout`, or Ctrl-C: this step did not end
            for r in ids:
                rows[r] = Row(r, ROW_TITLES[r], status="failed", reason=f"interrupted ({e})",
                              seconds=time.monotonic() - t0, log=f"logs/{ids[0]}.log")
            raise
        except Exception as e:  # a bug in the step itself: record it, go on
            got = [Row(r, ROW_TITLES[r], status="failed", reason=f"{type(e).__name__}: {e}",
                       error=traceback.format_exc()) for r in ids]
        seconds = time.monotonic() - t0
        for r in got:
            r.seconds = seconds
            r.log = f"logs/{ids[0]}.log"
            rows[r.id] = r
            c.say(f"  -> {r.id}: {r.status_text()} ({seconds:.1f} s) {r.figure}")
            if r.status == "failed" and r.error:
                c.say("     " + "\n     ".join(tail(r.error, 25).splitlines()))
        if ids == ("a",) and rows["a"].status != "ok":
            if "facts" not in c.state:
                blocked = "bonedeploy or torch does not import (a failed)"
            elif not c.has_cuda and not c.args.dry:
                blocked = "no CUDA (the full check needs a GPU; --dry runs it on the CPU)"
        write_summary(c, rows)


# -------------------------------------------------------------------------------------- summary


def summary_rows(rows: dict[str, Row]) -> list[Row]:
    return [rows.get(r) or Row(r, ROW_TITLES[r], status="skipped", reason="not reached")
            for r in ROW_ORDER]


def summary_markdown(c: Check, rows: dict[str, Row]) -> str:
    facts = c.state.get("facts") or {}
    head = [
        "# bonedeploy GPU check" + (" (DRY RUN: toy sizes, not a measurement)" if c.args.dry else ""),
        "", "```", c.state.get("command", ""), "```", "",
        f"Machine `{c.slug}`: GPU {facts.get('gpu') or 'none'} (nvidia-smi: "
        f"{facts.get('nvidia_smi') or 'not found'}); torch {facts.get('torch')} CUDA "
        f"{facts.get('torch_cuda')}; git {c.state.get('git')}. Budget {c.args.budget:.0f} s, "
        f"used {time.monotonic() - c.state['t0']:.0f} s.", "",
        "Targets are from an H100 measured earlier with plain PyTorch; on another card compare "
        "with care." + (" A dry run has no verdicts." if c.args.dry else ""), "",
        "| step | what | status | seconds | key figure | target | verdict |",
        "|---|---|---|---:|---|---|---|",
    ]
    body = [f"| {r.id} | {r.title} | {md_cell(r.status_text())} | {r.seconds:.1f} | "
            f"{md_cell(r.figure)} | {md_cell(r.target)} | {r.verdict} |" for r in summary_rows(rows)]
    errors = []
    for r in summary_rows(rows):
        if r.status == "failed":
            errors += ["", f"## {r.id} failed: {r.reason}", "", f"Full output: `{r.log}` in the "
                       "results tar and gpu_check.log.", "", "```", r.error or "", "```"]
    return "\n".join(head + body + errors) + "\n"


def md_cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def console_table(rows: dict[str, Row]) -> str:
    data = [(r.id, r.status_text(), f"{r.seconds:.1f}", r.figure, f"{r.target} {r.verdict}".strip())
            for r in summary_rows(rows)]
    head = ("step", "status", "s", "key figure", "target / verdict")
    widths = [min(60, max(len(x[i]) for x in [head, *data])) for i in range(5)]
    line = lambda cells: "  ".join(str(v)[:w].ljust(w) for v, w in zip(cells, widths)).rstrip()  # noqa: E731
    return "\n".join([line(head), line(["-" * w for w in widths]), *map(line, data)])


def write_summary(c: Check, rows: dict[str, Row]) -> None:
    """After every step, so a check killed from outside still leaves what it did."""
    from bonedeploy.util.fs import write_json, write_text

    payload = {"dry": c.args.dry, "machine": c.slug, "command": c.state.get("command"),
               "git": c.state.get("git"), "budget_s": c.args.budget,
               "elapsed_s": time.monotonic() - c.state["t0"], "facts": c.state.get("facts"),
               "statuses": list(STATUSES),
               "steps": [{k: v for k, v in vars(r).items()} for r in summary_rows(rows)]}
    write_json(c.out / "summary.json", payload)
    write_text(c.out / "summary.md", summary_markdown(c, rows))


def pack_results(c: Check) -> Path:
    """One tar of results/: benchmarks/results/, train/results/ (copy these into the repo), logs/, runs/."""
    name = "results-dry.tar.gz" if c.args.dry else f"results-{c.slug}.tar.gz"
    path = c.out / name
    with tarfile.open(path, "w:gz") as tar:
        for p in sorted(c.results.iterdir()) if c.results.is_dir() else []:
            tar.add(p, arcname=p.name)
    return path


# ------------------------------------------------------------------------------------ cudamem


def cudamem_roundtrip(mem: Any, mib: int, rows: int = 8, seed: int = 0) -> dict[str, Any]:
    """Pinned host -> device -> pinned host on one stream, as the TensorRT runner moves its batches:
    a full copy checked byte for byte, then a partial one (the first rows only, as for a batch
    smaller than the engine's) that must leave the rest of the host buffer untouched."""
    import numpy as np

    nbytes = mib << 20
    shape = (rows, nbytes // rows // 4)
    per_row = shape[1] * 4
    nbytes = rows * per_row
    src = mem.host_empty(shape, np.float32)
    back = mem.host_empty(shape, np.float32)
    dev = mem.malloc(nbytes)
    stream = mem.stream_create()
    try:
        src[...] = np.random.default_rng(seed).standard_normal(shape, dtype=np.float32)
        timings = []
        for _ in range(2):  # the first pays for context creation and page mapping
            back[...] = 0
            t0 = time.perf_counter()
            mem.htod_async(dev, src, nbytes, stream)
            mem.dtoh_async(back, dev, nbytes, stream)
            mem.synchronize(stream)
            timings.append(time.perf_counter() - t0)
        diff = np.flatnonzero(src.view(np.uint8).ravel() != back.view(np.uint8).ravel())
        partial = rows // 2
        back[...] = 0
        mem.dtoh_async(back, dev, partial * per_row, stream)
        mem.synchronize(stream)
        partial_ok = (np.array_equal(back[:partial].view(np.uint8), src[:partial].view(np.uint8))
                      and not back[partial:].any())
    finally:
        mem.stream_destroy(stream)
        mem.free(dev)
        mem.free_host(src)
        mem.free_host(back)
    return {"binding": mem.name, "mib": nbytes / 2**20, "identical": diff.size == 0 and partial_ok,
            "mismatches": int(diff.size), "first_mismatch": int(diff[0]) if diff.size else None,
            "partial_rows": partial, "partial_ok": bool(partial_ok), "seconds": timings,
            "gb_per_s": 2 * nbytes / min(timings) / 1e9}


def cudamem_main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="gpu_check.py cudamem")
    p.add_argument("--mib", type=int, default=256)
    p.add_argument("--binding", default="cuda-python")
    a = p.parse_args(argv)
    from bonedeploy.backends.cudamem import open_cuda

    print(json.dumps(cudamem_roundtrip(open_cuda(a.binding), a.mib)))
    return 0


# ----------------------------------------------------------------------------------------- main


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--dry", action="store_true", help="Toy sizes on whatever device is here "
                   "(CPU: the CUDA rows are skipped); checks the steps, measures nothing.")
    p.add_argument("--out", type=Path, default=Path(os.environ.get("OUT") or "out/gpu-check"),
                   help="summary.md/json, gpu_check.log and the results tar (default: $OUT).")
    p.add_argument("--work", type=Path, default=None, help="Scratch folder for data, runs, "
                   "checkpoints (default: /tmp/bonedeploy-gpu-check[-dry]); emptied first.")
    p.add_argument("--budget", type=float, default=None,
                   help="Seconds for all steps (default 465; --dry 600).")
    p.add_argument("--steps", help=f"Only these rows (or prefixes), e.g. a,b,d; valid: {', '.join(ROW_ORDER)}.")
    a = p.parse_args(argv)
    if a.budget is None:
        a.budget = 600.0 if a.dry else 465.0
    if a.work is None:
        a.work = Path("/tmp/bonedeploy-gpu-check" + ("-dry" if a.dry else ""))
    return a


def prepare_work(work: Path, out: Path) -> None:
    """Empty the scratch folder (a leftover sweep would be skipped as done), but only ours."""
    work, out = work.resolve(), out.resolve()
    if out == work or work in out.parents:
        raise SystemExit(f"--work {work} must not hold --out {out} (checkpoints would come back)")
    if work.exists() and any(work.iterdir()):
        if not (work / WORK_MARKER).is_file():
            raise SystemExit(f"--work {work} is not empty and not a previous check's folder; "
                             "give another --work")
        shutil.rmtree(work)
    work.mkdir(parents=True, exist_ok=True)
    (work / WORK_MARKER).write_text("scratch folder of benchmarks/gpu_check.py; deleted by the next check\n")


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["cudamem"]:
        return cudamem_main(argv[1:])
    args = parse_args(argv)
    from bonedeploy.util.machine import git_commit, machine_slug

    chosen = selected_steps(args.steps)
    prepare_work(args.work, args.out)
    args.out.mkdir(parents=True, exist_ok=True)

    def on_term(signum, frame):  # `timeout` sends SIGTERM: stop the step, keep the summary
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, on_term)
    with open(args.out / "gpu_check.log", "w", encoding="utf-8") as log:
        t0 = time.monotonic()
        c = Check(args=args, sizes=DRY if args.dry else REAL, out=args.out, work=args.work,
                  deadline=t0 + args.budget, log=log,
                  env={**os.environ, "PYTHONUNBUFFERED": "1", "COLUMNS": "160"})
        c.slug = machine_slug()
        c.state.update(t0=t0, git=git_commit(REPO),
                       command=shlex.join(["python", "benchmarks/gpu_check.py", *argv]))
        c.say(f"bonedeploy GPU check{' (dry)' if args.dry else ''} on {c.slug}, git {c.state['git']}, "
              f"budget {args.budget:.0f} s; work {args.work}, out {args.out}")
        rows: dict[str, Row] = {}
        try:
            run_steps(c, chosen, rows)
        except KeyboardInterrupt as e:
            c.say(f"interrupted ({e}): writing what was done")
        finally:
            write_summary(c, rows)
            tar = pack_results(c)
            c.say("\n" + console_table(rows))
            c.say(f"\nwrote {args.out / 'summary.md'}, summary.json, gpu_check.log, {tar.name} "
                  f"({time.monotonic() - t0:.0f} s)")
    failed = [r.id for r in summary_rows(rows) if r.status == "failed"]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
