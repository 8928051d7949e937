"""The typed config of a benchmark run and what it produces (JSON-able via ``to_dict``)."""

from __future__ import annotations

import datetime as _dt
import shlex
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bonedeploy.bench.targets import STATUS_GATE, STATUS_OK, Target
from bonedeploy.bench.timing import (
    DEFAULT_CV_WARN,
    DEFAULT_DURATION_S,
    DEFAULT_MIN_ITERATIONS,
    DEFAULT_WARMUP_S,
    TimingStats,
)
from bonedeploy.errors import ConfigError, DataError
from bonedeploy.util.defaults import none_means_default


class InputsError(DataError):
    """The images every row is measured on could not be prepared: the run fails, not one row."""

MODES = ("compute", "e2e", "both")
RESULT_FORMAT = "bonedeploy.bench/1"


@none_means_default  # None (the CLI's 'not given') means the default below
@dataclass
class BenchConfig:
    artefacts: list[Path] = field(default_factory=list)
    run_dir: Path | None = None
    data: Path | None = None
    batch_sizes: tuple[int, ...] = (1, 8, 32)
    duration_s: float = DEFAULT_DURATION_S
    warmup_s: float = DEFAULT_WARMUP_S
    min_iterations: int = DEFAULT_MIN_ITERATIONS
    mode: str = "both"
    compile: bool = False
    parity: bool = True
    parity_n: int | None = None
    cv_warn: float = DEFAULT_CV_WARN
    json_path: Path | None = None
    md_path: Path | None = None
    plot_path: Path | None = None
    quiet: bool = False
    command: str | None = None  # the command line, recorded in every output
    isolate: bool = True  # each row in its own process (bonedeploy.bench.isolate)
    other_runtimes: bool = True  # also each ONNX file on every other installed runtime (OpenVINO)
    select: bool = False  # write <artefact>.runtime.json (bonedeploy.backends.select)
    cold_start_runs: int = 3  # timed `infer` starts per row (bonedeploy.bench.coldstart); 0: none
    backends: tuple[str, ...] = ()  # only rows of these backends (+ the reference); (): all

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ConfigError(f"unknown mode {self.mode!r}; valid modes: {', '.join(MODES)}")
        if not self.batch_sizes or any(int(b) < 1 for b in self.batch_sizes):
            raise ConfigError(f"batch sizes must be positive integers, got {list(self.batch_sizes)}")
        self.batch_sizes = tuple(sorted({int(b) for b in self.batch_sizes}))
        if self.duration_s < 0 or self.warmup_s < 0:
            raise ConfigError("--duration and --warmup must be >= 0 seconds")
        if self.min_iterations < 1:
            raise ConfigError(f"--min-iters must be >= 1, got {self.min_iterations}")
        self.backends = tuple(self.backends)
        if self.backends:
            from bonedeploy.bench.runtimes import bench_backends

            valid = bench_backends()
            unknown = [b for b in self.backends if b not in valid]
            if unknown:
                raise ConfigError(f"--backend {','.join(unknown)}: unknown; valid backends: {', '.join(valid)}")
        if self.cold_start_runs < 0:
            raise ConfigError(f"--cold-start-runs must be >= 0 (0: no cold start), got {self.cold_start_runs}")
        self.artefacts = [Path(a) for a in self.artefacts]

    def command_line(self) -> str:
        """The ``bonedeploy bench`` command that reproduces this run (recorded in outputs)."""
        if self.command:
            return self.command
        args = ["bonedeploy", "bench", *map(str, self.artefacts)]
        for flag, value in (("--dir", self.run_dir), ("--data", self.data)):
            if value is not None:
                args += [flag, str(value)]
        args += ["--batch-sizes", ",".join(map(str, self.batch_sizes)), "--duration",
                 f"{self.duration_s:g}", "--warmup", f"{self.warmup_s:g}", "--min-iters",
                 str(self.min_iterations), "--mode", self.mode]
        args += ["--compile"] * self.compile + ["--no-parity"] * (not self.parity)
        args += ["--in-process"] * (not self.isolate) + ["--select"] * self.select
        if self.parity_n is not None:
            args += ["--parity-n", str(self.parity_n)]
        args += ["--cold-start-runs", str(self.cold_start_runs)]
        if self.backends:
            args += ["--backend", ",".join(self.backends)]
        for flag, value in (("--json", self.json_path), ("--md", self.md_path),
                            ("--plot", self.plot_path)):
            if value is not None:
                args += [flag, str(value)]
        return shlex.join(args)

    @property
    def modes(self) -> tuple[str, ...]:
        return ("compute", "e2e") if self.mode == "both" else (self.mode,)

    def to_dict(self) -> dict[str, Any]:
        return {
            "artefacts": [str(a) for a in self.artefacts],
            "run_dir": str(self.run_dir) if self.run_dir else None,
            "data": str(self.data) if self.data else None,
            "batch_sizes": list(self.batch_sizes), "duration_s": self.duration_s,
            "warmup_s": self.warmup_s, "min_iterations": self.min_iterations, "mode": self.mode,
            "compile": self.compile, "parity": self.parity, "parity_n": self.parity_n,
            "cv_warn": self.cv_warn, "isolate": self.isolate, "select": self.select,
            "cold_start_runs": self.cold_start_runs, "backends": list(self.backends),
        }


@dataclass
class ArtefactResult:
    target: Target
    status: str = STATUS_OK
    reason: str | None = None
    precision: str | None = None
    size_mb: float | None = None
    load_s: float | None = None
    first_call_s: float | None = None  # first inference: JIT compile, autotuning, cuDNN search
    describe: dict[str, Any] = field(default_factory=dict)
    timings: dict[str, dict[int, TimingStats]] = field(default_factory=dict)  # mode -> bs -> stats
    parity: dict[str, Any] | None = None
    gate_failures: list[str] = field(default_factory=list)
    peak_rss_mb: float | None = None
    rss_added_mb: float | None = None  # peak minus the RSS before loading: what this artefact cost
    peak_gpu_mb: float | None = None
    cold_start: dict[str, Any] | None = None  # bonedeploy.bench.coldstart.ColdStart.to_dict()

    @property
    def ran(self) -> bool:
        return self.status in (STATUS_OK, STATUS_GATE)

    def to_dict(self) -> dict[str, Any]:
        return {
            **self.target.to_dict(),
            "status": self.status, "reason": self.reason,
            "precision": self.precision or self.target.precision,
            "size_mb": self.size_mb, "load_s": self.load_s, "first_call_s": self.first_call_s,
            "describe": self.describe,
            "timings": {m: {str(bs): s.to_dict() for bs, s in per.items()}
                        for m, per in self.timings.items()},
            "parity": self.parity, "gate_failures": list(self.gate_failures),
            "peak_rss_mb": self.peak_rss_mb, "rss_added_mb": self.rss_added_mb,
            "peak_gpu_mb": self.peak_gpu_mb, "cold_start": self.cold_start,
        }


@dataclass
class BenchReport:
    config: BenchConfig
    machine: dict[str, Any]
    results: list[ArtefactResult]
    data: dict[str, Any] = field(default_factory=dict)  # parity/e2e inputs: source, n, root
    notes: list[str] = field(default_factory=list)
    reference: str | None = None  # key of the row parity and speed-ups are measured against
    created: str = field(default_factory=lambda: _dt.datetime.now(_dt.timezone.utc)
                         .isoformat(timespec="seconds"))
    parity_set: Any = None  # the ParitySet the rows ran on (not serialised; cold start reads a file of it)

    @property
    def gate_failures(self) -> dict[str, list[str]]:
        return {r.target.label: r.gate_failures for r in self.results if r.gate_failures}

    def to_dict(self) -> dict[str, Any]:
        ref = self.reference or next(
            (r.target.key for r in self.results if r.target.reference and r.ran), None)
        return {
            "format": RESULT_FORMAT, "created": self.created, "command": self.config.command_line(),
            "machine": self.machine, "config": self.config.to_dict(), "data": self.data,
            "reference": ref, "notes": list(self.notes),
            "results": [r.to_dict() for r in self.results],
        }
