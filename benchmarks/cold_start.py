#!/usr/bin/env python
"""Cold start: process start -> first written prediction, and -> exit, of ``bonedeploy infer`` on one image.

The measurement is ``bonedeploy.bench.coldstart`` (the one ``bonedeploy bench`` makes per row):
for each backend and image one untimed start (page cache, an empty compiled-model cache of its
own), then ``--runs`` rounds of one timed start each (the rows take turns, so they see the same
load); reported: median, min and max to the first written row and to exit, and the peak RSS.
Each backend runs twice: on the image in its class folder (labelled: ``infer`` computes its
metrics before it exits) and on the same bytes outside any class folder, the baseline measured in
the same run (labelled / unlabelled is what the labels cost).
Targets: <= 1.5 s to the first row (issue 13), <= 1.2 s to exit with the label (issue 23), the
int8 file on a 2-core CPU, warm page cache.

    python benchmarks/cold_start.py --onnx <run>/model.int8.onnx                  # all backends
    python benchmarks/cold_start.py --onnx m.int8.onnx --image elbows/Fractured/one.png --runs 9

Results: ``benchmarks/results/cold_start-<machine>.md`` and ``.json``.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import RESULTS, check, script_command, targets_markdown  # noqa: E402

FIRST_ROW_TARGET_S = 1.5
EXIT_TARGET_S = 1.2
BACKENDS = ("onnxruntime", "openvino")
IMAGES = ("unlabelled", "labelled")


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--onnx", type=Path, required=True, help="The artefact (the int8 file for the target).")
    p.add_argument("--image", type=Path, help="One radiograph in a folder named by its class, "
                   "e.g. elbows/Fractured/one.png (default: a synthetic one).")
    p.add_argument("--backends", default=",".join(BACKENDS))
    p.add_argument("--runs", type=int, default=5)
    p.add_argument("--out", type=Path, default=RESULTS)
    return p.parse_args()


def measure(backends: list[str], onnx: Path, paths: dict[str, Path], runs: int, work: Path) -> list[dict[str, Any]]:
    """The library's measurement (``bonedeploy.bench.coldstart``), as ``bench`` makes it, each
    backend on each image with an empty compiled-model cache of its own: the untimed first start
    is then the first start after an install, and the timed ones start from the cache it wrote.
    The timed starts take turns, so every row sees the same load."""
    from bonedeploy.bench.coldstart import StartSpec, measure_cold_starts
    from bonedeploy.bench.isolate import child_env

    rows = [(b, tag) for b in backends for tag in IMAGES]
    specs = [StartSpec(onnx, b, paths[tag], env={**child_env(), "BONEDEPLOY_CACHE_DIR": str(work / f"cache-{b}-{tag}")})
             for b, tag in rows]
    return [{"image": tag, **cs.to_dict()} for (_, tag), cs in zip(rows, measure_cold_starts(specs, runs, work))]


def images(given: Path | None, work: Path) -> dict[str, Path]:
    """The labelled image (in its class folder) and the same bytes where no folder names a class."""
    if given is None:
        from bonedeploy.data.synth import SynthConfig, generate_dataset

        generate_dataset(work / "synth", SynthConfig(n=2, seed=0))
        given = sorted((work / "synth" / "Fractured").glob("*.png"))[0]
    bare = work / "unlabelled" / given.name
    bare.parent.mkdir(parents=True)
    shutil.copyfile(given, bare)
    return {"unlabelled": bare, "labelled": given}


def spread(r: dict[str, Any], suffix: str = "") -> str:
    return f"{r[f'median{suffix}_s']:.2f} s ({r[f'min{suffix}_s']:.2f}–{r[f'max{suffix}_s']:.2f})"


def main() -> None:
    from bonedeploy.util.fs import write_json, write_text
    from bonedeploy.util.machine import machine_info, machine_slug

    args = parse_args()
    machine = machine_info()
    load_start = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="bonedeploy-cold-") as tmp:
        work = Path(tmp)
        paths = images(args.image, work)
        results = measure(args.backends.split(","), args.onnx, paths, args.runs, work)
    for r in results:
        if r["metrics"] != (r["image"] == "labelled"):
            sys.exit(f"{paths[r['image']]}: the {r['image']} start {'computed no' if r['image'] == 'labelled' else 'computed'} "
                     "metrics; --image must lie in a folder named by one of the model's classes")
        print(f"{r['backend']}, {r['image']}: to the first row {spread(r)}, to exit {spread(r, '_exit')}; first "
              f"start, empty cache {r['first_run_s']:.2f} s; peak RSS {r['peak_rss_mb']:.0f} MB")
    load = os.getloadavg()
    by = {(r["backend"], r["image"]): r for r in results}
    ratios, checks = [], []
    for b in args.backends.split(","):
        lab, bare = by[(b, "labelled")], by[(b, "unlabelled")]
        ratios.append({"backend": b, "labelled_exit_over_unlabelled_exit": lab["median_exit_s"] / bare["median_exit_s"],
                       "labelled_exit_minus_first_row_s": lab["median_exit_s"] - lab["median_s"]})
        checks.append(check(f"{b}: labelled image, to the first row (issue 13)", lab["median_s"], "<=",
                            FIRST_ROW_TARGET_S, " s"))
        checks.append(check(f"{b}: labelled image, to exit (issue 23)", lab["median_exit_s"], "<=",
                            EXIT_TARGET_S, " s"))
    d = {"machine": machine, "command": script_command(), "artefact": str(args.onnx),
         "image": str(args.image) if args.image else "synthetic (Fractured/synth_00000.png, seed 0)",
         "target_first_row_s": FIRST_ROW_TARGET_S, "target_exit_s": EXIT_TARGET_S,
         "loadavg_1_5_15_start": load_start, "loadavg_1_5_15": load, "results": results,
         "ratios": ratios, "targets": checks}
    base = args.out / f"cold_start-{machine_slug(machine)}"
    write_text(base.with_suffix(".md"), to_markdown(d, args.onnx))
    write_json(base.with_suffix(".json"), d)
    print(targets_markdown(checks))
    print(f"wrote {base.with_suffix('.md')}, .json")


def to_markdown(d: dict[str, Any], onnx: Path) -> str:
    m, (l0, l1) = d["machine"], (d["loadavg_1_5_15_start"], d["loadavg_1_5_15"])
    lines = [f"# Cold start of `bonedeploy infer` on one image ({m['cpu']}, {m['cores']} cores)", "",
             f"`{d['command']}` — artefact `{onnx.name}`, image {d['image']}, commit `{m.get('git_commit')}`; "
             f"load average (1/5/15 min) {l0[0]:.1f} / {l0[1]:.1f} / {l0[2]:.1f} at the start, "
             f"{l1[0]:.1f} / {l1[1]:.1f} / {l1[2]:.1f} at the end (a busy machine inflates every figure).", "",
             "Process start → the first prediction row written, and → the process's exit; median (min–max) "
             f"of {d['results'][0]['runs']} starts, page cache warm, the backend's compiled-model cache built by "
             "one untimed first start with an empty cache (its time: 'first start, empty cache'). "
             "*labelled*: the image in its class folder, so `infer` computes its metrics (accuracy, Wilson "
             "interval, sensitivity/specificity; numpy) before it exits; *unlabelled*: the same bytes outside "
             "any class folder, the baseline of the same run. CPU: the median start's user + system "
             "seconds, all its threads (the load of a shared machine inflates it less than the wall clock).", "",
             "| backend | image | metrics | to the first row | to exit | exit − first row | CPU (user + sys) | first start, empty cache | peak RSS |",
             "| --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for r in d["results"]:
        lines.append(f"| {r['backend']} | {r['image']} | {'yes' if r['metrics'] else 'no'} | {spread(r)} | "
                     f"{spread(r, '_exit')} | {r['median_exit_s'] - r['median_s']:.2f} s | {r['median_cpu_s']:.2f} s | "
                     f"{r['first_run_s']:.2f} s | {r['peak_rss_mb']:.0f} MB |")
    lines += ["", "## What the labels cost (same run)", "",
              "| backend | labelled ÷ unlabelled, to exit | labelled: exit − first row |", "| --- | ---: | ---: |"]
    lines += [f"| {x['backend']} | {x['labelled_exit_over_unlabelled_exit']:.2f}× | "
              f"{x['labelled_exit_minus_first_row_s']:.2f} s |" for x in d["ratios"]]
    return "\n".join(lines) + "\n\n" + targets_markdown(d["targets"])


if __name__ == "__main__":
    main()
