#!/usr/bin/env python
"""CPU backends: PyTorch fp32 eager vs ONNX Runtime and OpenVINO, fp32 / fp16 / int8, batch 1, 8, 32.

Reproduces ``benchmarks/results/<machine>.md`` (and .json/.png). Ratios are against PyTorch fp32
eager measured in the same run, on the same machine, with the same preprocessed inputs. Every row
is timed in its own process, one after another (``bonedeploy.bench.isolate``), so ONNX Runtime's
spinning threads and OpenVINO's pool never share the CPU. Also measured for every row, after all
rows were timed: cold start (process start -> first written row of ``bonedeploy infer`` on one
image, median of ``--cold-runs``) and its peak RSS (``bonedeploy.bench.coldstart``).

Targets (issue #6): int8 ONNX >= 3x PyTorch eager throughput at batch 8 with top-1 agreement >= 98%;
fp32 ONNX >= PyTorch eager at every batch size. Issue 13 (on an Intel CPU with AVX-512 VNNI;
reported for whatever CPU this is): OpenVINO int8 >= 1.3x onnxruntime int8 at batch 8; the best
CPU path >= 5x PyTorch fp32 eager at batch 8; the fraction of the int8 peak reached, with the
clock and cores assumed (``--clock-ghz``; AlexNet at 400 x 400 is 3.31 GMAC per image and AVX-512
VNNI does 128 int8 MAC per cycle per core).

With ``--run-dir`` holding a trained ``best.pt`` (from ``bonedeploy train``) the script exports
any missing ONNX file (``bonedeploy export --precision fp32,fp16,int8 --no-trt``) and measures.
Without it, it prepares a run in ``--work``: a synthetic data set (``bonedeploy.data.synth``), a short
CPU training run of ``--model`` (the seed's selected AlexNet by default), and the export. Parity
is measured on that checkpoint's validation split.

    python benchmarks/cpu_backends.py                         # full run (minutes on 2 cores)
    python benchmarks/cpu_backends.py --duration 0.3 --model vgg8 --epochs 1 --synth-n 48  # smoke
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

from rich.console import Console

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import RESULTS, check, row, run_targets, script_command, write_results  # noqa: E402

from bonedeploy.bench import BenchConfig  # noqa: E402
from bonedeploy.bench.targets import CHECKPOINT, ONNX_FILES, onnx_target, torch_targets  # noqa: E402
from bonedeploy.bench.runtimes import add_runtime_rows  # noqa: E402
from bonedeploy.models.alexnet import SELECTED  # noqa: E402

GMAC_PER_IMAGE = 3.31  # AlexNet at 400 x 400 (issue 13)
MAC_PER_CYCLE = 128  # int8 MAC per cycle per core with AVX-512 VNNI


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--run-dir", type=Path, help="A run folder with best.pt (default: prepare one in --work).")
    p.add_argument("--work", type=Path, default=Path.home() / ".cache/bonedeploy/bench-cpu",
                   help="Where a prepared run and its synthetic data live.")
    p.add_argument("--model", default=SELECTED, help="Model to prepare when --run-dir is not given.")
    p.add_argument("--epochs", type=int, default=3, help="Training epochs of the prepared run.")
    p.add_argument("--synth-n", type=int, default=160, help="Synthetic images of the prepared run.")
    p.add_argument("--batch-sizes", default="1,8,32")
    p.add_argument("--duration", type=float, default=3.0, help="Seconds measured per batch size.")
    p.add_argument("--warmup", type=float, default=0.2)
    p.add_argument("--min-iters", type=int, default=10)
    p.add_argument("--mode", default="compute", choices=("compute", "e2e", "both"))
    p.add_argument("--out", type=Path, default=RESULTS, help="Results folder.")
    p.add_argument("--clock-ghz", type=float, default=None, help="Clock for the int8 peak "
                   "(default: the highest 'cpu MHz' in /proc/cpuinfo).")
    p.add_argument("--cold-runs", type=int, default=5, help="Timed cold starts per backend (0: skip).")
    p.add_argument("--in-process", action="store_true", help="All rows in this process (not isolated).")
    p.add_argument("--quiet", action="store_true")
    return p.parse_args()


def bonedeploy(*args: str) -> int:
    """The CLI in a subprocess: the same commands a user runs, and their exit code."""
    return subprocess.run([sys.executable, "-m", "bonedeploy", *args]).returncode


def prepare(args: argparse.Namespace, console: Console) -> Path:
    run = args.run_dir or args.work / args.model
    if not (run / CHECKPOINT).is_file():
        if args.run_dir:
            raise SystemExit(f"{run / CHECKPOINT}: no such file")
        data = args.work / "data"
        if not data.is_dir():
            from bonedeploy.data.synth import SynthConfig, generate_dataset

            console.print(f"generating {args.synth_n} synthetic radiographs in {data}")
            generate_dataset(data, SynthConfig(n=args.synth_n, seed=0))
        console.print(f"training {args.model} for {args.epochs} epoch(s) on the CPU into {run}")
        rc = bonedeploy("train", str(data), "--model", args.model, "--epochs", str(args.epochs),
                        "--device", "cpu", "--out", str(run), "--overwrite", "--quiet")
        if rc != 0:
            raise SystemExit(f"training failed (exit {rc})")
    if not all((run / f).is_file() for f in ONNX_FILES.values()):
        rc = bonedeploy("export", str(run / CHECKPOINT), "--precision", "fp32,fp16,int8", "--no-trt",
                        "--quiet")
        if rc not in (0, 2):  # 2: a gate failed; the files are kept and bench reports the gate again
            raise SystemExit(f"export failed (exit {rc})")
    return run


def main() -> None:
    args = parse_args()
    console = Console(width=150)
    run = prepare(args, console)
    targets = add_runtime_rows(torch_targets(run / CHECKPOINT)[:1]
                               + [onnx_target(run / f) for f in ONNX_FILES.values()])
    config = BenchConfig(run_dir=run, batch_sizes=tuple(int(b) for b in args.batch_sizes.split(",")),
                         duration_s=args.duration, warmup_s=args.warmup, min_iterations=args.min_iters,
                         mode=args.mode, quiet=args.quiet, command=script_command(),
                         isolate=not args.in_process, cold_start_runs=args.cold_runs)
    d = run_targets(targets, config, console)
    cold = [{"key": r["key"], "label": r["label"], **r["cold_start"]} for r in d["results"]
            if (r.get("cold_start") or {}).get("median_s") is not None]

    def ratio(key: str, bs: int) -> float | None:
        r = row(d, key)
        from bonedeploy.bench.render.report import speedup

        return speedup(d, r, "compute", bs) if r else None

    int8 = (row(d, "onnx-int8") or {}).get("parity") or {}
    ov_vs_ort = None
    if ratio("onnx-int8", 8) and ratio("openvino-int8", 8):
        ov_vs_ort = ratio("openvino-int8", 8) / ratio("onnx-int8", 8)
    best_key, best = max(((r["key"], ratio(r["key"], 8)) for r in d["results"]
                          if r["status"] == "ok" and not r.get("reference")),
                         key=lambda kv: kv[1] or 0.0, default=(None, None))
    peak = int8_peak(d, args.clock_ghz)
    checks = [check("ONNX int8 throughput ÷ PyTorch fp32 eager, batch 8", ratio("onnx-int8", 8), ">=", 3.0, "×"),
              check("ONNX int8 top-1 agreement with PyTorch fp32", int8.get("top1_agreement"), ">=", 0.98)]
    checks += [check(f"ONNX fp32 throughput ÷ PyTorch fp32 eager, batch {bs}", ratio("onnx-fp32", bs),
                     ">=", 1.0, "×") for bs in config.batch_sizes]
    checks += [check("OpenVINO int8 ÷ onnxruntime int8, batch 8", ov_vs_ort, ">=", 1.3, "×"),
               check(f"best CPU path ({best_key}) ÷ PyTorch fp32 eager, batch 8", best, ">=", 5.0, "×")]
    for key in ("onnx-int8", "openvino-int8"):
        c = next((c for c in cold if c["key"] == key), None)
        checks.append(check(f"cold start, {key} (median of {c['runs'] if c else '–'}, s)",
                            c and c["median_s"], "<=", 1.5, " s"))
    for key in ("openvino-int8", "onnx-int8"):
        t = (((row(d, key) or {}).get("timings") or {}).get("compute") or {}).get("8")
        if t and peak:
            peak.setdefault("fraction_at_batch_8", {})[key] = t["images_per_s"] / peak["images_per_s"]
    d["int8_peak"] = peak
    preamble = (f"CPU backends on {d['machine']['cpu']} ({d['machine']['cores']} cores)\n\n"
                f"Model: `{run / CHECKPOINT}` and its ONNX exports. Every row below was measured on "
                "this CPU with onnxruntime's CPUExecutionProvider, OpenVINO's CPU plugin or PyTorch on the CPU. No GPU and "
                "no TensorRT rows here: GPU rows come from `benchmarks/gpu_torch.py` on a GPU "
                "machine, and TensorRT rows need a machine with TensorRT and an NVIDIA GPU. "
                + isolation_note(config) + "\n\n" + peak_text(peak) + "\n\n" + cold_text(cold))
    write_results(d, checks, preamble, args.out, "", console)


def isolation_note(config: BenchConfig) -> str:
    if config.isolate:
        return ("Each row was timed in its own process, one after another, with no other runtime "
                "loaded (`bonedeploy.bench.isolate`).")
    return "All rows ran in this one process, taking turns (`--in-process`): runtimes may disturb each other."


def int8_peak(d: dict, clock_ghz: float | None) -> dict | None:
    """AlexNet's int8 ceiling on this CPU: cores x 128 int8 MAC/cycle (AVX-512 VNNI) x clock."""
    from bonedeploy.util.machine import cpu_flags

    cores = d["machine"].get("cores") or 0
    if clock_ghz is None:
        try:
            mhz = [float(line.split(":")[1]) for line in Path("/proc/cpuinfo").read_text().splitlines()
                   if line.startswith("cpu MHz")]
            clock_ghz = max(mhz) / 1000 if mhz else None
        except (OSError, ValueError):
            clock_ghz = None
    if not cores or not clock_ghz:
        return None
    macs = cores * MAC_PER_CYCLE * clock_ghz * 1e9
    return {"cores": cores, "clock_ghz": clock_ghz, "mac_per_cycle_per_core": MAC_PER_CYCLE,
            "gmac_per_image": GMAC_PER_IMAGE, "images_per_s": macs / (GMAC_PER_IMAGE * 1e9),
            "vnni": "avx512_vnni" in cpu_flags()}


def peak_text(peak: dict | None) -> str:
    if not peak:
        return "int8 peak: not computed (clock or core count unknown; pass --clock-ghz)."
    fr = peak.get("fraction_at_batch_8") or {}
    reached = ", ".join(f"{k} {v:.0%}" for k, v in fr.items()) or "–"
    return (f"int8 peak assumed: {peak['cores']} cores × {peak['mac_per_cycle_per_core']} int8 MAC/cycle "
            f"(AVX-512 VNNI{'' if peak['vnni'] else ', not reported by this CPU'}) × "
            f"{peak['clock_ghz']:.2f} GHz ÷ {peak['gmac_per_image']} GMAC/image = "
            f"{peak['images_per_s']:.0f} img/s; reached at batch 8: {reached}.")


def cold_text(cold: list[dict]) -> str:
    if not cold:
        return "Cold start: not measured."
    rows = "; ".join(f"{c['label']} {c['median_s']:.2f} s ({c['min_s']:.2f}–{c['max_s']:.2f}), "
                     f"peak RSS {c['peak_rss_mb']:.0f} MB" for c in cold)
    return ("Cold start of `bonedeploy infer` on one image (process start → first written row, warm "
            f"page cache and compiled-model cache, median of {cold[0]['runs']}, one row at a time "
            "after all timing): " + rows + ".")


if __name__ == "__main__":
    main()
