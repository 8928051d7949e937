#!/usr/bin/env python
"""OpenVINO's settings for one synchronous caller: hint, streams and shapes, one file, one batch size.

Why the backend's defaults are what they are (``hint=latency``, ``shapes=dynamic``): each setting
is loaded into the openvino backend in turn (compiled-model cache off, so each compiles afresh) and
timed at ``--batch-size`` with ``bonedeploy.bench.timing.measure`` — the same measurement as
``bonedeploy bench``; ratios are against the defaults measured in the same run. Rows run in this
one process, one after another, each closed before the next opens.

    python benchmarks/openvino_settings.py <run>/model.int8.onnx --batch-size 8

Results: ``benchmarks/results/openvino_settings-<machine>.md`` and ``.json``.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import RESULTS, script_command  # noqa: E402

SETTINGS: tuple[dict[str, Any], ...] = (
    {}, {"shapes": "static"}, {"hint": "throughput"}, {"hint": "throughput", "shapes": "static"},
    {"streams": 2},
)


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("onnx", type=Path)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--duration", type=float, default=4.0)
    p.add_argument("--warmup", type=float, default=0.5)
    p.add_argument("--out", type=Path, default=RESULTS)
    return p.parse_args()


def main() -> None:
    from bonedeploy.backends.openvino import OpenVinoBackend
    from bonedeploy.bench.timing import measure
    from bonedeploy.util.fs import write_json, write_text
    from bonedeploy.util.machine import machine_info, machine_slug

    args = parse_args()
    machine = machine_info()
    rows = []
    for setting in SETTINGS:
        with OpenVinoBackend(args.onnx, cache=False, **setting) as b:
            b.load()
            c, h, w = b.card.preprocess.input_shape
            x = np.random.default_rng(0).random((args.batch_size, c, h, w), dtype=np.float32)
            st = measure(lambda: b.infer(x), args.batch_size, warmup_s=args.warmup,
                         duration_s=args.duration, min_iterations=10)
            rows.append({"setting": setting or {"defaults": True}, "describe": b.describe(),
                         "p50_ms": st.p50_ms, "images_per_s": st.images_per_s, "cv": st.cv})
        r = rows[-1]
        print(f"{r['setting']}: p50 {r['p50_ms']:.1f} ms, {r['images_per_s']:.1f} img/s", flush=True)
    base = rows[0]["images_per_s"]
    load = os.getloadavg()
    d = {"machine": machine, "command": script_command(), "artefact": str(args.onnx),
         "batch_size": args.batch_size, "loadavg_1_5_15": load, "rows": rows}
    path = args.out / f"openvino_settings-{machine_slug(machine)}"
    lines = [f"# OpenVINO settings, one synchronous caller ({machine['cpu']}, {machine['cores']} cores)", "",
             f"`{d['command']}` — `{args.onnx.name}`, batch {args.batch_size}, compute only; load average "
             f"at the end {load[0]:.1f} / {load[1]:.1f} / {load[2]:.1f}.", "",
             "| setting | p50 ms | images/s | CV | × defaults |", "| --- | ---: | ---: | ---: | ---: |"]
    lines += [f"| {', '.join(f'{k}={v}' for k, v in r['setting'].items())} | {r['p50_ms']:.1f} | "
              f"{r['images_per_s']:.1f} | {r['cv']:.1%} | {r['images_per_s'] / base:.2f} |" for r in rows]
    write_text(path.with_suffix(".md"), "\n".join(lines) + "\n")
    write_json(path.with_suffix(".json"), d)
    print(f"wrote {path.with_suffix('.md')}, .json")


if __name__ == "__main__":
    main()
