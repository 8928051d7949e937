"""``bonedeploy sweep --devices 0,1,2,3``: the sweep's runs as a queue over GPUs.

Each run is its own process (``python -m bonedeploy.training.sweep_worker``) that sees exactly one
GPU (``CUDA_VISIBLE_DEVICES``), so a device holds one run at a time and a crash, an OOM or a hung
CUDA context takes down one run, not the sweep. Runs start in recipe order on the first free
device; a failed run is recorded (exit status, its log) and the queue goes on. Each run's output
goes to ``OUT/<run>/train.log``, apart from the others. The sequential in-process sweep
(``--devices cpu``, the default) is ``training.sweep.run_sweep``.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

from bonedeploy.errors import ConfigError
from bonedeploy.util.fs import write_json

CPU = "cpu"
LOG = "train.log"
JOB = "sweep-job.json"
POLL_S = 0.2


def parse_devices(text: str | None) -> tuple[str, ...] | None:
    """``--devices``: ``cpu``, or GPU indices / UUIDs as CUDA_VISIBLE_DEVICES takes them."""
    if text is None:
        return None
    devices = tuple(s.strip() for s in text.split(",") if s.strip())
    if not devices:
        raise ConfigError(f"--devices {text!r}: expected cpu or comma-separated GPU indices, e.g. 0,1,2,3")
    if CPU in devices and devices != (CPU,):
        raise ConfigError(f"--devices {text!r}: cpu runs the sweep sequentially in this process; "
                          "give either cpu or GPU indices, not both")
    twice = sorted({d for d in devices if devices.count(d) > 1})
    if twice:
        raise ConfigError(f"--devices {text!r}: {', '.join(twice)} given twice; one run per device at a time")
    return devices


def is_queue(devices: tuple[str, ...] | None) -> bool:
    return bool(devices) and devices != (CPU,)


@dataclass
class Job:
    name: str
    config: dict[str, Any]  # TrainConfig.to_dict()
    folder: Path

    @property
    def log(self) -> Path:
        return self.folder / LOG


@dataclass
class Outcome:
    name: str
    device: str
    status: str  # "done" or "failed"
    exit_code: int | None
    seconds: float
    log: Path
    last_line: str = ""


@dataclass
class Running:
    job: Job
    device: str
    proc: Any  # subprocess.Popen (or a test's stand-in with poll/send_signal/wait/pid)
    started: float = field(default_factory=time.monotonic)


def worker_argv(job_file: Path) -> list[str]:
    """The command one queued run executes (tests substitute one that knows their tiny models)."""
    return [sys.executable, "-m", "bonedeploy.training.sweep_worker", str(job_file)]


def launch(job: Job, device: str) -> subprocess.Popen:
    """Start ``job`` on ``device`` (it sees that GPU only, as cuda:0), output to its own log."""
    job.folder.mkdir(parents=True, exist_ok=True)
    job_file = job.folder / JOB
    write_json(job_file, {"name": job.name, "device": device, "config": job.config})
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": device, "PYTHONUNBUFFERED": "1"}
    for key in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(key, None)  # one run is one process, even when the sweep runs inside a job
    with open(job.log, "a", encoding="utf-8") as log:
        log.write(f"# {time.strftime('%Y-%m-%d %H:%M:%S')} run {job.name} on CUDA_VISIBLE_DEVICES={device}\n")
        log.flush()
        return subprocess.Popen(worker_argv(job_file), stdout=log, stderr=subprocess.STDOUT, env=env,
                                stdin=subprocess.DEVNULL, start_new_session=True)


def run_queue(jobs: Sequence[Job], devices: Sequence[str],
              start: Callable[[Job, str], Any] = launch,
              log: Callable[[str], None] = lambda s: None) -> list[Outcome]:
    """Run ``jobs`` in order, one per free device, until all have ended; returns their outcomes in
    job order. Ctrl-C stops every running job (its last.pt lets a rerun resume it)."""
    pending, running, ended = list(jobs), [], {}
    free = list(devices)
    try:
        while pending or running:
            while pending and free:
                job, device = pending.pop(0), free.pop(0)
                running.append(Running(job, device, start(job, device)))
                log(f"{job.name}: started on device {device} (log: {job.log})")
            time.sleep(POLL_S if running else 0)
            for r in [r for r in running if r.proc.poll() is not None]:
                running.remove(r)
                free.append(r.device)
                ended[r.job.name] = outcome_of(r)
                log(describe(ended[r.job.name]))
    except BaseException:
        stop(running)
        raise
    return [ended[j.name] for j in jobs]


def outcome_of(r: Running) -> Outcome:
    code = r.proc.poll()
    return Outcome(r.job.name, r.device, "done" if code == 0 else "failed", code,
                   time.monotonic() - r.started, r.job.log, "" if code == 0 else last_line(r.job.log))


def describe(o: Outcome) -> str:
    if o.status == "done":
        return f"{o.name}: done on device {o.device} in {o.seconds:.0f} s"
    return (f"{o.name}: FAILED on device {o.device} (exit {o.exit_code}) after {o.seconds:.0f} s: "
            f"{o.last_line or 'no output'} (log: {o.log})")


def last_line(path: Path) -> str:
    """The log's last non-empty line (the error line ``bonedeploy`` prints)."""
    try:
        lines = [ln.strip() for ln in path.read_text(encoding="utf-8", errors="replace").splitlines()]
    except OSError:
        return ""
    lines = [ln for ln in lines if ln and not ln.startswith("#")]
    return lines[-1][:300] if lines else ""


def stop(running: list[Running], grace_s: float = 10.0) -> None:
    """SIGINT to every running job's process group (train saves nothing half-written), then SIGKILL."""
    for r in running:
        _signal(r.proc, signal.SIGINT)
    end = time.monotonic() + grace_s
    for r in running:
        try:
            r.proc.wait(timeout=max(0.1, end - time.monotonic()))
        except subprocess.TimeoutExpired:
            _signal(r.proc, signal.SIGKILL)
            r.proc.wait()


def _signal(proc: Any, sig: int) -> None:
    try:
        os.killpg(proc.pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def failures(outcomes: Sequence[Outcome]) -> dict[str, dict[str, Any]]:
    """name -> what results.md/csv and sweep.json record about a failed run."""
    return {o.name: {"exit_code": o.exit_code, "log": str(o.log), "error": o.last_line, "device": o.device}
            for o in outcomes if o.status == "failed"}


def read_job(path: str | Path) -> dict[str, Any]:
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError) as e:
        raise ConfigError(f"{path}: not a sweep job file ({e})") from e
