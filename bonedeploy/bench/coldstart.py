"""Cold start: process start -> the first prediction row of ``bonedeploy infer`` on one image,
and -> the process's exit.

What an edge box that restarts often pays before its first answer: interpreter start, imports,
reading and compiling the model (or loading its compiled-model cache), one decode, one inference,
one row written. Then, before the exit a script waiting on the process sees: the final file, the
metrics when the image is labelled (a class folder above it), interpreter shutdown. Timed from
outside, as a user would see it: ``python -m bonedeploy infer --engine ART IMAGE`` is started,
the output's ``.partial`` file is polled every 2 ms until it holds a row, then the process until
it exits. One untimed start comes first: it fills the page cache and builds the backend's
compiled-model caches, as the first start after an install would; the timed starts then measure
a warm restart. Peak RSS is polled (``bench.memory.peak_rss_mb_of``).

One truth: ``bonedeploy bench`` (a column per row) and ``benchmarks/cold_start.py`` both call
:func:`measure_cold_starts`.
"""

from __future__ import annotations

import os
import shlex
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bonedeploy.errors import ConfigError
from bonedeploy.eval.metrics import metrics_file

TIMEOUT_S = 300.0  # one start; a TensorRT engine or torch on a slow disk can take a while
POLL_S = 0.002
# Target options `infer` has a flag for; any other option becomes --backend-option KEY=VALUE.
FLAGS = {"device": "--device", "precision": "--precision", "provider": "--provider"}


class ColdStartError(RuntimeError):
    """An ``infer`` start failed: its exit status and the end of what it printed."""


@dataclass
class ColdStart:
    backend: str
    command: str
    first_run_s: float  # the untimed start: page cache and compiled-model caches built here
    times_s: list[float] = field(default_factory=list)  # to the first row, each timed start
    exit_s: list[float] = field(default_factory=list)  # to the exit, the same starts
    peak_rss_mb: float = 0.0
    metrics: bool = False  # every timed start wrote a metrics file: its image was labelled
    cpu_s: list[float] = field(default_factory=list)  # user + system CPU seconds, the same starts

    @property
    def median_s(self) -> float:
        return statistics.median(self.times_s)

    @property
    def median_exit_s(self) -> float:
        return statistics.median(self.exit_s)

    def to_dict(self) -> dict[str, Any]:
        """To the first row: ``median_s``, ``min_s``, ``max_s``, ``all_s``; to the exit: the same
        with ``_exit``."""
        return {"backend": self.backend, "command": self.command, "runs": len(self.times_s),
                "first_run_s": self.first_run_s, "metrics": self.metrics,
                "median_s": self.median_s, "min_s": min(self.times_s), "max_s": max(self.times_s),
                "median_exit_s": self.median_exit_s, "min_exit_s": min(self.exit_s),
                "max_exit_s": max(self.exit_s), "peak_rss_mb": self.peak_rss_mb,
                "median_cpu_s": statistics.median(self.cpu_s) if self.cpu_s else None,
                "all_s": list(self.times_s), "all_exit_s": list(self.exit_s), "all_cpu_s": list(self.cpu_s)}


def infer_args(options: dict[str, Any]) -> list[str] | None:
    """``infer`` flags reproducing a bench row's backend options; None when ``infer`` cannot
    (a CUDA-graph row: infer captures its graph for --batch-size, not for one image)."""
    if options.get("cuda_graph"):
        return None
    args: list[str] = []
    for key, value in sorted(options.items()):
        if value is None or key == "batch_size":
            continue
        if key in FLAGS:
            args += [FLAGS[key], str(value)]
        else:
            args += ["--backend-option", f"{key}={value}"]
    return args


def infer_command(artefact: Path, image: Path, out: Path, backend: str,
                  options: dict[str, Any] | None = None) -> list[str]:
    from bonedeploy.bench.runtimes import local_backends

    if backend not in local_backends():
        raise ConfigError(f"cold start: backend {backend!r} is not one `bonedeploy infer` runs on a "
                          f"file; valid: {', '.join(local_backends())}")
    extra = infer_args(options or {})
    if extra is None:
        raise ConfigError(f"cold start: `bonedeploy infer` cannot reproduce the options {options}")
    return [sys.executable, "-m", "bonedeploy", "infer", "--engine", str(artefact), str(image),
            "--out", str(out), "--backend", backend, "--quiet", *extra]


def time_start(cmd: list[str], out: Path, env: dict[str, str] | None = None,
               timeout_s: float = TIMEOUT_S) -> dict[str, Any]:
    """One start: seconds to the first written row and to exit, the peak RSS in MB, and whether
    it wrote a metrics file."""
    partial = out.with_name(out.name + ".partial")
    metrics = metrics_file(out)
    for p in (out, partial, out.with_name(out.name + ".run.json"), metrics):
        p.unlink(missing_ok=True)
    log = out.with_name(out.name + ".stderr")
    with open(log, "wb") as err_fh:  # a file, not a pipe: a chatty child must not block on it
        first, exited, hwm, code, cpu = _watch(cmd, partial, out, err_fh, env, timeout_s)
    err = log.read_text(errors="replace")
    log.unlink(missing_ok=True)
    if code != 0:
        raise ColdStartError(f"{shlex.join(cmd)} exited {code}: {' '.join(err.split())[-600:]}")
    return {"first_row_s": first if first is not None else exited, "exit_s": exited, "peak_rss_mb": hwm,
            "cpu_s": cpu, "metrics": metrics.exists()}


def _watch(cmd, partial: Path, out: Path, err_fh, env, timeout_s: float):
    """(seconds to the first row or None, seconds to exit, peak RSS MB, exit status, CPU seconds:
    user + system, the process's threads included; what load on a shared machine does not inflate
    as much as the wall clock)."""
    from bonedeploy.bench.memory import peak_rss_mb_of

    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=err_fh, env=env)
    first, hwm, cpu = None, 0.0, 0.0
    try:
        while True:
            hwm = max(hwm, peak_rss_mb_of(proc.pid))
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            now = time.perf_counter()
            if first is None and (_has_row(partial) or _has_row(out)):
                first = now - t0
            if pid:
                proc.returncode = os.waitstatus_to_exitcode(status)
                cpu = usage.ru_utime + usage.ru_stime
                break
            if now - t0 > timeout_s:
                raise ColdStartError(f"{shlex.join(cmd)} ran past {timeout_s:g} s")
            time.sleep(POLL_S)
    finally:
        if proc.returncode is None:  # timed out, or interrupted: never leave it running
            proc.kill()
            proc.wait()
    return first, now - t0, hwm, proc.returncode, cpu


@dataclass(frozen=True)
class StartSpec:
    """One ``infer`` start to time: an artefact on a backend, one image."""

    artefact: Path
    backend: str
    image: Path
    options: dict[str, Any] | None = None
    env: dict[str, str] | None = None


def measure_cold_start(artefact: str | Path, backend: str, image: str | Path, runs: int,
                       workdir: str | Path, options: dict[str, Any] | None = None,
                       env: dict[str, str] | None = None) -> ColdStart:
    """One untimed start, then ``runs`` timed ones (``runs`` >= 1)."""
    spec = StartSpec(Path(artefact), backend, Path(image), options, env)
    return measure_cold_starts([spec], runs, workdir)[0]


def measure_cold_starts(specs: list[StartSpec], runs: int, workdir: str | Path) -> list[ColdStart]:
    """Each spec's untimed start, then ``runs`` rounds of one timed start per spec: specs compared
    with each other (the same image labelled and not) see the same load on a shared machine."""
    if runs < 1:
        raise ConfigError(f"cold start: runs must be >= 1, got {runs}")
    outs = [Path(workdir) / f"coldstart-{s.backend}-{i}.csv" for i, s in enumerate(specs)]
    cmds = [infer_command(s.artefact, s.image, out, s.backend, s.options) for s, out in zip(specs, outs)]
    first = [time_start(cmd, out, s.env) for s, cmd, out in zip(specs, cmds, outs)]
    timed: list[list[dict[str, Any]]] = [[] for _ in specs]
    for _ in range(runs):
        for s, cmd, out, times in zip(specs, cmds, outs, timed):
            times.append(time_start(cmd, out, s.env))
    for out in outs:
        for p in (out, out.with_name(out.name + ".run.json"), metrics_file(out)):
            p.unlink(missing_ok=True)
    return [ColdStart(s.backend, shlex.join(cmd), f["first_row_s"], [t["first_row_s"] for t in times],
                      [t["exit_s"] for t in times], max(t["peak_rss_mb"] for t in times),
                      all(t["metrics"] for t in times), [t["cpu_s"] for t in times])
            for s, cmd, f, times in zip(specs, cmds, first, timed)]


def _has_row(path: Path) -> bool:
    try:
        return path.stat().st_size > 0 and path.read_text().count("\n") >= 2  # header + one row
    except (OSError, UnicodeDecodeError):
        return False


def add_cold_starts(report, runs: int, data: Path | None = None, log=None) -> None:
    """Give each row of a finished ``BenchReport`` that ``infer`` can run its cold start, one row
    after another with nothing else of ours running; a start that fails is recorded, not raised."""
    import tempfile

    from bonedeploy.bench.inputs import image_files
    from bonedeploy.bench.isolate import child_env
    from bonedeploy.bench.runtimes import local_backends

    log = log or (lambda msg: None)
    rows = [r for r in report.results if r.ran and r.target.backend in local_backends()
            and infer_args(r.target.options) is not None]
    if not rows or runs < 1:
        return
    with tempfile.TemporaryDirectory(prefix="bonedeploy-coldstart-") as tmp:
        holder = tempfile.TemporaryDirectory(dir=tmp)
        image = image_files(report.parity_set, data, 1, holder)[0][0]
        for r in rows:
            try:
                cs = measure_cold_start(r.target.path, r.target.backend, image, runs, tmp,
                                        r.target.options, env=child_env())
            except (ColdStartError, OSError) as e:
                r.cold_start = {"error": str(e)}
                log(f"{r.target.label}: cold start failed: {e}")
                continue
            r.cold_start = cs.to_dict()
            log(f"{r.target.label}: cold start {cs.median_s:.2f} s to the first row, "
                f"{cs.median_exit_s:.2f} s to exit (medians of {runs}; the first start "
                f"{cs.first_run_s:.2f} s), peak RSS {cs.peak_rss_mb:.0f} MB")
    report.notes.append(f"cold start: process start → the first row of `bonedeploy infer` on one "
                        f"image ({Path(image).name}), median of {runs} starts after one untimed start "
                        "that warms the page cache and the compiled-model caches; one row at a time")
