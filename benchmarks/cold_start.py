#!/usr/bin/env python
"""Cold start: process start -> first written prediction of ``bonedeploy infer`` on one image.

For each backend, one untimed run first (it fills the page cache and builds the backend's
compiled-model cache, as the first start of an edge box after install would), then ``--runs``
timed runs; reported: the median, min and max of the time until the row is in the output file
(polled every 2 ms) and until the process exits, and the process's peak RSS (``VmHWM`` of
``/proc/<pid>/status``, polled: ``wait4``'s ``ru_maxrss`` would include the forking parent's
pages, which Linux carries across ``exec``; decoder workers are not counted, and one batch of
inputs decodes in the process itself). Target (issue 13): <= 1.5 s with the int8 file on a
2-core CPU, warm page cache.

    python benchmarks/cold_start.py --onnx <run>/model.int8.onnx                  # all backends
    python benchmarks/cold_start.py --onnx m.int8.onnx --backends openvino --runs 9

Results: ``benchmarks/results/cold_start-<machine>.md`` and ``.json``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import RESULTS, script_command  # noqa: E402

TARGET_S = 1.5
BACKENDS = ("onnxruntime", "openvino")


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--onnx", type=Path, required=True, help="The artefact (the int8 file for the target).")
    p.add_argument("--image", type=Path, help="One radiograph (default: a synthetic one).")
    p.add_argument("--backends", default=",".join(BACKENDS))
    p.add_argument("--runs", type=int, default=5)
    p.add_argument("--out", type=Path, default=RESULTS)
    return p.parse_args()


def one_run(cmd: list[str], out: Path) -> dict[str, float]:
    """Seconds to the first written row and to exit, and the peak RSS in MB."""
    for p in (out, out.with_name(out.name + ".partial"), out.with_name(out.name + ".run.json")):
        p.unlink(missing_ok=True)
    partial = out.with_name(out.name + ".partial")
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    first, hwm = None, 0.0
    while True:
        hwm = max(hwm, _vm_hwm_mb(proc.pid))
        pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
        now = time.perf_counter()
        if first is None and (_has_row(partial) or _has_row(out)):
            first = now - t0
        if pid:
            break
        time.sleep(0.002)
    exited = now - t0
    proc.returncode = os.waitstatus_to_exitcode(status)
    err = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} exited {proc.returncode}: {err[-800:]}")
    return {"first_row_s": first if first is not None else exited, "exit_s": exited,
            "peak_rss_mb": hwm}


def _vm_hwm_mb(pid: int) -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except (OSError, ValueError, IndexError):
        pass
    return 0.0


def _has_row(path: Path) -> bool:
    try:
        return path.stat().st_size > 0 and path.read_text().count("\n") >= 2  # header + one row
    except (OSError, UnicodeDecodeError):
        return False


def measure(backend: str, onnx: Path, image: Path, runs: int, work: Path) -> dict[str, Any]:
    out = work / f"{backend}.csv"
    cmd = [sys.executable, "-m", "bonedeploy", "infer", "--engine", str(onnx), str(image),
           "--out", str(out), "--backend", backend, "-q"]
    first_ever = one_run(cmd, out)  # page cache + compiled-model cache
    timed = [one_run(cmd, out) for _ in range(runs)]
    rows = [t["first_row_s"] for t in timed]
    return {"backend": backend, "runs": runs, "command": " ".join(cmd),
            "first_run_s": first_ever["first_row_s"],
            "median_s": statistics.median(rows), "min_s": min(rows), "max_s": max(rows),
            "median_exit_s": statistics.median(t["exit_s"] for t in timed),
            "peak_rss_mb": max(t["peak_rss_mb"] for t in timed), "all_s": rows}


def synthetic_image(work: Path) -> Path:
    from bonedeploy.data.synth import SynthConfig, generate_dataset

    generate_dataset(work / "synth", SynthConfig(n=2, seed=0))
    return next(p for p in sorted((work / "synth").rglob("*.png")))


def main() -> None:
    from bonedeploy.util.fs import write_json, write_text
    from bonedeploy.util.machine import machine_info, machine_slug

    args = parse_args()
    machine = machine_info()
    with tempfile.TemporaryDirectory(prefix="bonedeploy-cold-") as tmp:
        work = Path(tmp)
        image = args.image or synthetic_image(work)
        results = []
        for b in args.backends.split(","):
            r = measure(b, args.onnx, image, args.runs, work)
            results.append(r)
            print(f"{b}: median {r['median_s']:.2f} s (min {r['min_s']:.2f}, max {r['max_s']:.2f}; "
                  f"first run {r['first_run_s']:.2f} s), peak RSS {r['peak_rss_mb']:.0f} MB", flush=True)
    load = os.getloadavg()
    d = {"machine": machine, "command": script_command(), "artefact": str(args.onnx),
         "target_s": TARGET_S, "loadavg_1_5_15": load, "results": results}
    slug = machine_slug(machine)
    base = args.out / f"cold_start-{slug}"
    lines = [f"# Cold start of `bonedeploy infer` on one image ({machine['cpu']}, {machine['cores']} cores)", "",
             f"`{d['command']}` — artefact `{args.onnx.name}`; load average at the end "
             f"{load[0]:.1f} / {load[1]:.1f} / {load[2]:.1f} (a busy machine inflates every figure).", "",
             "Process start → the first prediction row written, page cache warm, the backend's "
             "compiled-model cache built by one untimed run before.", "",
             "| backend | median | min | max | first run ever | to exit (median) | peak RSS | ≤ 1.5 s |",
             "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for r in results:
        lines.append(f"| {r['backend']} | {r['median_s']:.2f} s | {r['min_s']:.2f} s | {r['max_s']:.2f} s | "
                     f"{r['first_run_s']:.2f} s | {r['median_exit_s']:.2f} s | {r['peak_rss_mb']:.0f} MB | "
                     f"{'PASS' if r['median_s'] <= TARGET_S else 'FAIL'} |")
    write_text(base.with_suffix(".md"), "\n".join(lines) + "\n")
    write_json(base.with_suffix(".json"), d)
    print(f"wrote {base.with_suffix('.md')}, .json")


if __name__ == "__main__":
    main()
