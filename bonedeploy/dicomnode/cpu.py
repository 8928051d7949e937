"""Where the node's CPU goes, stage by stage: on a small CPU every millisecond spent outside the
model is throughput lost, so the node keeps the account and writes it to ``<spool>/cpu.json`` when
it stops (benchmarks/dicom_node.py prints it per instance).

A stage is timed with the CPU clock of the thread doing it (``time.thread_time``, ~1 us a call).
Two kinds of work run outside our threads and are read from /proc per thread (Linux; elsewhere
they stay in ``unattributed``): pynetdicom's threads of each association, when it ends, less what
our handlers did in them; and the model runtime's own thread pool (the process's threads that are
not Python's), at the end.
"""

from __future__ import annotations

import json
import os
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

FILENAME = "cpu.json"
_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def thread_cpu(*native_ids: int | None) -> float | None:
    """CPU seconds (user + system) of these threads of this process; None where unreadable."""
    total = 0.0
    for tid in native_ids:
        if tid is None:
            return None
        try:
            with open(f"/proc/self/task/{tid}/stat", "rb") as f:
                fields = f.read().rsplit(b")", 1)[1].split()
        except OSError:
            return None
        total += (int(fields[11]) + int(fields[12])) / _TICKS
    return total


def _native_threads_cpu() -> float | None:
    """CPU of the threads Python did not start (the model runtime's pool)."""
    try:
        tids = {int(t) for t in os.listdir("/proc/self/task")}
    except OSError:
        return None
    python = {t.native_id for t in threading.enumerate()}
    return sum(thread_cpu(t) or 0.0 for t in tids - python)


class CpuLedger:
    def __init__(self):
        self._lock = threading.Lock()
        self._stages: dict[str, list[float]] = {}  # name -> [cpu s, wall s, calls]
        self._t0 = self._cpu0 = self._native0 = None

    def start(self) -> None:
        """From now on (the port is open): what happened before (loading, warming up) is not counted."""
        with self._lock:
            self._stages.clear()
            self._t0, self._cpu0, self._native0 = time.perf_counter(), _process_cpu(), _native_threads_cpu()

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        cpu, wall = time.thread_time(), time.perf_counter()
        try:
            yield
        finally:
            self.add(name, time.thread_time() - cpu, time.perf_counter() - wall)

    def add(self, name: str, cpu: float, wall: float = 0.0, calls: int = 1) -> None:
        with self._lock:
            s = self._stages.setdefault(name, [0.0, 0.0, 0])
            s[0] += cpu
            s[1] += wall
            s[2] += calls

    def summary(self) -> dict:
        with self._lock:
            stages = {k: {"cpu_s": v[0], "wall_s": v[1], "calls": v[2]} for k, v in sorted(self._stages.items())}
            t0, cpu0, native0 = self._t0, self._cpu0, self._native0
        if t0 is None:
            return {}
        native = _native_threads_cpu()
        if native is not None and native0 is not None:
            stages["analyse: model runtime's threads"] = {"cpu_s": native - native0, "wall_s": 0.0, "calls": 0}
        process = _process_cpu() - cpu0
        return {"seconds": time.perf_counter() - t0, "process_cpu_s": process, "stages": stages, "unattributed_cpu_s": process - sum(s["cpu_s"] for s in stages.values())}

    def write(self, spool: Path) -> dict:
        summary = self.summary()
        (Path(spool) / FILENAME).write_text(json.dumps(summary, indent=1) + "\n")
        return summary


def _process_cpu() -> float:
    t = os.times()
    return t.user + t.system
