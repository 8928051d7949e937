"""Run the benchmark: load each artefact, check parity against the PyTorch fp32 reference on
labelled images, time it per batch size (compute-only and end-to-end), record memory."""

from __future__ import annotations

import contextlib
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np

from bonedeploy.bench import inputs as inp
from bonedeploy.bench import memory
from bonedeploy.bench import targets as dsc
from bonedeploy.bench.results import ArtefactResult, BenchConfig, BenchReport, InputsError
from bonedeploy.bench.timing import measure
from bonedeploy.eval import parity
from bonedeploy.eval.parity import ParitySet, select_parity_set
from bonedeploy.errors import (
    BackendUnavailableError,
    BonedeployError,
    IncompatibleEngineError,
)

Log = Callable[[str], None]
PARITY_CHUNK = 32  # inside every engine profile's default max; backends chunk larger batches


def _open_compiled(target: dsc.Target, **options: Any):
    from bonedeploy.bench.compiled import open_compiled

    return open_compiled(target.path, **options)


# Bench-only modes that are not registered backends (they exist to be measured against).
OPENERS: dict[str, Callable[..., Any]] = {dsc.TORCH_COMPILE: _open_compiled}


def open_target(target: dsc.Target, **extra: Any):
    """Construct (not load) the backend for a target; tests replace this with a double."""
    options = {**target.options, **extra}
    if target.backend in OPENERS:
        return OPENERS[target.backend](target, **options)
    from bonedeploy.backends import open_backend

    return open_backend(target.path, target.backend, **options)


def precision_of(backend, target: dsc.Target) -> str:
    """The precision that actually runs: the backend's own account (a .pt run in fp16 still
    carries an fp32 card), else the artefact's card, else what the file name said."""
    desc = backend.describe() or {}
    card = getattr(backend.card, "precision", None)
    return desc.get("precision") or card or target.precision


class Runner:
    def __init__(self, config: BenchConfig, log: Log | None = None,
                 opener: Callable[[dsc.Target], Any] = open_target,
                 inputs: ParitySet | None = None):
        self.config = config
        self.log = log or (lambda msg: None)
        self.opener = opener
        self.inputs = inputs
        self.ref_logits: np.ndarray | None = None
        self.ref_ood: np.ndarray | None = None  # the reference's OOD scores (parity images + probes)
        self.ref_label: str | None = None
        self.ref_key: str | None = None
        self.files: list[Path] | None = None
        self.notes: list[str] = []
        self._streams: list[inp.FileStream] = []
        self._tmp = tempfile.TemporaryDirectory(prefix="bonedeploy-bench-")

    # --- orchestration ---------------------------------------------------------------------
    def run(self, targets: list[dsc.Target], machine: dict[str, Any]) -> BenchReport:
        try:
            results = {t.key: ArtefactResult(t) for t in targets}
            order = sorted(targets, key=lambda t: not t.reference)  # reference first
            for t in order:
                self._run_one(results[t.key])
            data = self.inputs.describe() if self.inputs is not None else {}
            if self.files is not None:
                data["e2e_files"] = len(self.files)
            return BenchReport(self.config, machine, [results[t.key] for t in targets], data,
                               self.notes, reference=self.ref_key, parity_set=self.inputs)
        finally:
            self._tmp.cleanup()

    def _run_one(self, res: ArtefactResult) -> None:
        t = res.target
        blocked = dsc.precheck(t)
        if t.path.is_file():
            res.size_mb = t.path.stat().st_size / 2**20
        if blocked:
            res.status, res.reason = blocked
            self.log(f"{t.label}: {res.status}")
            return
        self.log(f"{t.label}: loading {t.path}")
        per_artefact = memory.reset_peak_rss()  # else the peak is the whole process's
        memory.reset_peak_gpu()
        rss_before = memory.current_rss_mb() if per_artefact else None
        backend = None
        try:
            backend = self.opener(t, **({"batch_size": PARITY_CHUNK} if t.per_batch else {}))
            t0 = time.perf_counter()
            backend.load()
            backend.synchronize()
            res.load_s = time.perf_counter() - t0
            res.precision = precision_of(backend, t)
            res.describe = dict(backend.describe())
            self._ensure_inputs(t, backend)
            t1 = time.perf_counter()  # the first call pays for JIT, autotuning, cuDNN search
            backend.infer(self.inputs.x[:PARITY_CHUNK])
            backend.synchronize()
            res.first_call_s = time.perf_counter() - t1
            self._parity(res, backend)
            for mode in self.config.modes:
                res.timings[mode] = self._time(res, backend, mode)
        except IncompatibleEngineError as e:
            res.status, res.reason = dsc.STATUS_INCOMPATIBLE, str(e)
        except BackendUnavailableError as e:
            res.status, res.reason = dsc.STATUS_UNAVAILABLE, str(e)
        except InputsError:
            raise
        except BonedeployError as e:
            res.status, res.reason = dsc.STATUS_ERROR, str(e)
        except Exception as e:  # a broken runtime must not hide the other rows; say what broke
            res.status, res.reason = dsc.STATUS_ERROR, f"{type(e).__name__}: {e}"
        finally:
            if backend is not None:
                try:
                    backend.close()
                except Exception:  # noqa: BLE001 -- closing must not mask the result
                    pass
        res.peak_rss_mb = memory.peak_rss_mb()
        if rss_before is not None:
            res.rss_added_mb = max(0.0, res.peak_rss_mb - rss_before)
        res.peak_gpu_mb = memory.peak_gpu_mb()
        if res.status == dsc.STATUS_OK and res.gate_failures:
            res.status = dsc.STATUS_GATE
            res.reason = "; ".join(res.gate_failures)
        if res.status != dsc.STATUS_OK:
            self.log(f"{t.label}: {res.status}")

    # --- parity ------------------------------------------------------------------------------
    def _ensure_inputs(self, t: dsc.Target, backend) -> None:
        if self.inputs is not None:
            return
        ckpt = None
        if t.backend == "torch":
            from bonedeploy.artefacts.checkpoint import load_checkpoint

            ckpt = load_checkpoint(t.path)
        try:
            self.inputs = select_parity_set(ckpt=ckpt, data=self.config.data, spec=backend.card.preprocess,
                                            n=self.config.parity_n, classes=backend.card.classes)
            if backend.card.ood is not None:  # OOD decisions are compared on non-radiographs too
                self.inputs = parity.with_probes(self.inputs, backend.card.preprocess)
        except BonedeployError as e:
            raise InputsError(f"cannot prepare the parity images: {e}") from e
        except Exception as e:  # noqa: BLE001 -- one line for the user, not a traceback
            raise InputsError(f"cannot prepare the parity images: {type(e).__name__}: {e}") from e
        self.log(f"parity set: {self.inputs.kind} ({len(self.inputs)} images"
                 + (f" from {self.inputs.root})" if self.inputs.root else ")"))

    def _parity(self, res: ArtefactResult, backend) -> None:
        if not self.config.parity:
            return
        logits, scores = parity.backend_outputs(backend, self.inputs, PARITY_CHUNK)
        if self.ref_logits is None:
            if not (res.target.reference or res.precision == "fp32"):
                return  # nothing trustworthy to compare against yet
            self.ref_logits, self.ref_label, self.ref_key = logits, res.target.label, res.target.key
            self.ref_ood = scores
            if not res.target.reference:
                self.notes.append("the PyTorch reference did not run; parity and speed-ups "
                                  f"are against {self.ref_label}")
        from bonedeploy.eval.decision import rule_for

        ood = None
        if self.ref_ood is not None and backend.card.ood is not None:
            ood = parity.OODCheck(backend.card.ood, self.ref_ood, scores, self.inputs.ood_names)
        result = parity.compare(self.ref_logits, logits, self.inputs.paths, backend.card.classes,
                                labels=self.inputs.labels, decision=rule_for(backend.card), ood=ood)
        res.parity = {**result.to_dict(), "reference": self.ref_label}
        if res.target.label == self.ref_label:
            return
        if res.precision in parity.GATES:
            res.parity["gate"] = parity.GATES[res.precision].describe()
            res.gate_failures = list(parity.check_gate(result, res.precision))
        else:
            self.notes.append(f"{res.target.label}: no parity gate for precision {res.precision!r}")

    # --- timing ------------------------------------------------------------------------------
    def _time(self, res: ArtefactResult, backend, mode: str) -> dict:
        cfg = self.config
        out = {}
        for bs in cfg.batch_sizes:
            with self._backend_for(res.target, backend, bs) as b:
                try:
                    stats = measure(self._step(b, mode, bs), bs, warmup_s=cfg.warmup_s,
                                    duration_s=cfg.duration_s, min_iterations=cfg.min_iterations,
                                    synchronize=b.synchronize, cv_warn=cfg.cv_warn)
                finally:
                    while self._streams:
                        self._streams.pop().close()
            out[bs] = stats
            self.log(f"{res.target.label}: {mode} batch {bs}: p50 {stats.p50_ms:.2f} ms, "
                     f"{stats.images_per_s:.1f} img/s ({stats.iterations} it)"
                     + (f" [yellow]{stats.warning}[/]" if stats.warning else ""))
        return out

    @contextlib.contextmanager
    def _backend_for(self, t: dsc.Target, backend, bs: int) -> Iterator[Any]:
        """The loaded backend, or for fixed-batch modes (CUDA graphs) one captured for ``bs``."""
        if not t.per_batch:
            yield backend
            return
        b = self.opener(t, batch_size=bs)
        try:
            yield b.load()
        finally:
            b.close()

    def _step(self, backend, mode: str, bs: int) -> Callable[[], Any]:
        if mode == "compute":
            batch = inp.take(self.inputs.x, bs)
            return lambda: backend.infer(batch)
        if self.files is None:
            self.files, where = inp.image_files(self.inputs, self.config.data,
                                                max(16, *self.config.batch_sizes), self._tmp)
            self.notes.append(f"end-to-end mode reads {len(self.files)} files from {where}, decoding "
                              "in infer's prefetch pool (bonedeploy.data.decode) ahead of the model")
        stream = inp.FileStream(self.files, backend.card.preprocess, bs,
                                self._batches_needed())
        self._streams.append(stream)

        def step() -> Any:
            x = stream.next_batch()
            return backend.infer(x) if len(x) else None

        return step

    def _batches_needed(self) -> int:
        """Enough batches for warm-up + measurement at a generous 1 ms per batch."""
        cfg = self.config
        return max(2 * cfg.min_iterations + 8, int((cfg.warmup_s + cfg.duration_s) * 1000 * 1.2))


def run_bench(config: BenchConfig, log: Log | None = None, targets: list[dsc.Target] | None = None,
              **runner_kwargs: Any) -> BenchReport:
    """Benchmark every target named by ``config`` (or ``targets``, for scripts that pick their own
    rows); never raises for a row that cannot run."""
    from bonedeploy.util.machine import machine_info

    from bonedeploy.bench.runtimes import collect

    if targets is None:
        targets = collect(config.artefacts, config.run_dir, config.compile, config.other_runtimes,
                          config.backends)
    if config.isolate and not runner_kwargs:  # test doubles cannot cross a process boundary
        from bonedeploy.bench.isolate import run_isolated

        report = run_isolated(config, targets, machine_info(), log)
    else:
        report = Runner(config, log, **runner_kwargs).run(targets, machine_info())
    if config.cold_start_runs and not runner_kwargs:  # after every row: nothing else is running
        from bonedeploy.bench.coldstart import add_cold_starts

        add_cold_starts(report, config.cold_start_runs, config.data, log)
    return report
