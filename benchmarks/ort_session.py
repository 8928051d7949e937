#!/usr/bin/env python
"""Does ONNX Runtime's optimised-model cache shorten a cold start? Session creation + first run.

For each ONNX file: an InferenceSession made from the file as ``bonedeploy`` makes it
(ORT_ENABLE_ALL), against one made from the optimised model that a first session saved
(``optimized_model_filepath``), in ONNX format and in ORT format (``session.save_model_format``),
loaded with optimisations off, as a cache would be. Each figure is the best of ``--repeat``
sessions in this process, page cache warm; the first run is included because a session that
skips its work at creation (pre-packing, also measured switched off) pays it on the first run. Outputs are compared with the
source session's.

    python benchmarks/ort_session.py <run>/model.int8.onnx <run>/model.onnx <run>/model.fp16.onnx

Results: ``benchmarks/results/ort_session-<machine>.md`` and ``.json``.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import RESULTS, script_command  # noqa: E402


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("onnx", type=Path, nargs="+")
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--threads", type=int, default=None, help="intra-op threads (default: physical cores)")
    p.add_argument("--out", type=Path, default=RESULTS)
    return p.parse_args()


def options(ort, threads: int, level, save: Path | None = None, fmt: str | None = None,
            load_ort: bool = False, prepack: bool = True):
    o = ort.SessionOptions()
    o.intra_op_num_threads, o.inter_op_num_threads = threads, 1
    o.graph_optimization_level = level
    o.log_severity_level = 3  # the "hardware-specific model" warning is the point here
    if save is not None:
        o.optimized_model_filepath = str(save)
    if fmt:
        o.add_session_config_entry("session.save_model_format", fmt)
    if load_ort:
        o.add_session_config_entry("session.load_model_format", "ORT")
    if not prepack:
        o.add_session_config_entry("session.disable_prepacking", "1")
    return o


def timed(ort, path: Path, opts, x: np.ndarray, repeat: int) -> tuple[float, float, float, np.ndarray]:
    """Best (creation s, creation + first run s) over ``repeat`` sessions, the median of 10 later
    runs of the last session (ms: what a long-lived process pays per call), and the output."""
    best_create, best_total, y, s = float("inf"), float("inf"), None, None
    for _ in range(repeat):
        t0 = time.perf_counter()
        s = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
        t1 = time.perf_counter()
        y = s.run(None, {s.get_inputs()[0].name: x})[0]
        t2 = time.perf_counter()
        best_create, best_total = min(best_create, t1 - t0), min(best_total, t2 - t0)
    later = []
    for _ in range(10):
        t = time.perf_counter()
        s.run(None, {s.get_inputs()[0].name: x})
        later.append(time.perf_counter() - t)
    return best_create, best_total, 1000 * float(np.median(later)), y


def measure(ort, path: Path, threads: int, repeat: int, tmp: Path) -> list[dict[str, Any]]:
    L = ort.GraphOptimizationLevel
    probe = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    inp = probe.get_inputs()[0]
    shape = [1 if not isinstance(d, int) else d for d in inp.shape]
    x = np.random.default_rng(0).random(shape).astype(np.float16 if "float16" in inp.type else np.float32)
    rows = []
    create, total, later, ref = timed(ort, path, options(ort, threads, L.ORT_ENABLE_ALL), x, repeat)
    rows.append({"file": path.name, "load": "the .onnx (ORT_ENABLE_ALL, as bonedeploy does)",
                 "mb": path.stat().st_size / 2**20, "create_s": create, "first_result_s": total,
                 "later_run_ms": later, "max_abs_diff": 0.0})
    create, total, later, y = timed(ort, path, options(ort, threads, L.ORT_ENABLE_ALL, prepack=False), x, repeat)
    rows.append({"file": path.name, "load": "the .onnx, weight pre-packing off", "mb": rows[0]["mb"],
                 "create_s": create, "first_result_s": total, "later_run_ms": later,
                 "max_abs_diff": float(np.abs(y.astype(np.float64) - ref).max())})
    for fmt, suffix in (("ONNX", ".onnx"), ("ORT", ".ort")):
        cached = tmp / f"{path.stem}.optimized{suffix}"
        ort.InferenceSession(str(path), options(ort, threads, L.ORT_ENABLE_ALL, cached, fmt),
                             providers=["CPUExecutionProvider"])
        create, total, later, y = timed(ort, cached, options(ort, threads, L.ORT_DISABLE_ALL,
                                                             load_ort=fmt == "ORT"), x, repeat)
        rows.append({"file": path.name, "load": f"its optimised model, {fmt} format (optimisations off)",
                     "mb": cached.stat().st_size / 2**20, "create_s": create, "first_result_s": total,
                     "later_run_ms": later, "max_abs_diff": float(np.abs(y.astype(np.float64) - ref).max())})
        cached.unlink()
    return rows


def main() -> None:
    import onnxruntime as ort

    from bonedeploy.backends.onnxrt import physical_cores
    from bonedeploy.util.fs import write_json, write_text
    from bonedeploy.util.machine import machine_info, machine_slug

    args = parse_args()
    threads = args.threads or physical_cores()
    machine = machine_info()
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="bonedeploy-ort-session-") as tmp:
        for path in args.onnx:
            rows += measure(ort, path, threads, args.repeat, Path(tmp))
            for r in rows[-4:]:
                print(f"{r['file']}: {r['load']}: create {r['create_s']:.3f} s, first result "
                      f"{r['first_result_s']:.3f} s, later runs {r['later_run_ms']:.1f} ms", flush=True)
    load = os.getloadavg()
    d = {"machine": machine, "command": script_command(), "onnxruntime": ort.__version__,
         "threads": threads, "repeat": args.repeat, "loadavg_1_5_15": load, "rows": rows}
    base = args.out / f"ort_session-{machine_slug(machine)}"
    lines = [f"# ONNX Runtime session start: the file vs its optimised-model cache ({machine['cpu']}, "
             f"{machine['cores']} cores)", "",
             f"`{d['command']}` — onnxruntime {ort.__version__}, {threads} intra-op threads, best of "
             f"{args.repeat} sessions, page cache warm; load average at the end {load[0]:.1f} / "
             f"{load[1]:.1f} / {load[2]:.1f}.", "",
             "| file | loaded from | MB on disk | session created | first result | later runs (median) | max abs Δ output |",
             "| --- | --- | ---: | ---: | ---: | ---: | ---: |"]
    lines += [f"| {r['file']} | {r['load']} | {r['mb']:.0f} | {r['create_s']:.3f} s | "
              f"{r['first_result_s']:.3f} s | {r['later_run_ms']:.1f} ms | {r['max_abs_diff']:.1e} |" for r in rows]
    write_text(base.with_suffix(".md"), "\n".join(lines) + "\n")
    write_json(base.with_suffix(".json"), d)
    print(f"wrote {base.with_suffix('.md')}, .json")


if __name__ == "__main__":
    main()
