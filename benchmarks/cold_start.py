#!/usr/bin/env python
"""Cold start: process start -> first written prediction of ``bonedeploy infer`` on one image.

The measurement is ``bonedeploy.bench.coldstart`` (the one ``bonedeploy bench`` makes per row):
for each backend one untimed start (page cache, compiled-model cache), then ``--runs`` timed
starts; reported: median, min and max to the first written row and to exit, and the peak RSS.
Target (issue 13): <= 1.5 s with the int8 file on a 2-core CPU, warm page cache.

    python benchmarks/cold_start.py --onnx <run>/model.int8.onnx                  # all backends
    python benchmarks/cold_start.py --onnx m.int8.onnx --backends openvino --runs 9

Results: ``benchmarks/results/cold_start-<machine>.md`` and ``.json``.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
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


def measure(backend: str, onnx: Path, image: Path, runs: int, work: Path) -> dict[str, Any]:
    """The library's measurement (``bonedeploy.bench.coldstart``), as ``bench`` makes it, with an
    empty compiled-model cache of its own: the untimed first start is then the first start after
    an install, and the timed ones start from the cache it wrote."""
    from bonedeploy.bench.coldstart import measure_cold_start
    from bonedeploy.bench.isolate import child_env

    env = {**child_env(), "BONEDEPLOY_CACHE_DIR": str(work / f"cache-{backend}")}
    return measure_cold_start(onnx, backend, image, runs, work, env=env).to_dict()


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
                  f"first start, empty cache {r['first_run_s']:.2f} s), peak RSS {r['peak_rss_mb']:.0f} MB", flush=True)
    load = os.getloadavg()
    d = {"machine": machine, "command": script_command(), "artefact": str(args.onnx),
         "target_s": TARGET_S, "loadavg_1_5_15": load, "results": results}
    slug = machine_slug(machine)
    base = args.out / f"cold_start-{slug}"
    lines = [f"# Cold start of `bonedeploy infer` on one image ({machine['cpu']}, {machine['cores']} cores)", "",
             f"`{d['command']}` — artefact `{args.onnx.name}`; load average at the end "
             f"{load[0]:.1f} / {load[1]:.1f} / {load[2]:.1f} (a busy machine inflates every figure).", "",
             "Process start → the first prediction row written, page cache warm, the backend's "
             "compiled-model cache built by one untimed first start with an empty cache (its time: "
             "'first start, empty cache').", "",
             "| backend | median | min | max | first start, empty cache | to exit (median) | peak RSS | ≤ 1.5 s |",
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
