#!/usr/bin/env python
"""CPU backends: PyTorch fp32 eager vs ONNX Runtime fp32 / fp16 / int8 at batch 1, 8, 32.

Reproduces ``benchmarks/results/<machine>.md`` (and .json/.png). Ratios are against PyTorch fp32
eager measured in the same run, on the same machine, with the same preprocessed inputs. Targets
(issue #6): int8 ONNX >= 3x PyTorch eager throughput at batch 8 with top-1 agreement >= 98%;
fp32 ONNX >= PyTorch eager at every batch size.

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
from bonedeploy.models.alexnet import SELECTED  # noqa: E402


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
    targets = torch_targets(run / CHECKPOINT)[:1] + [onnx_target(run / f) for f in ONNX_FILES.values()]
    config = BenchConfig(run_dir=run, batch_sizes=tuple(int(b) for b in args.batch_sizes.split(",")),
                         duration_s=args.duration, warmup_s=args.warmup, min_iterations=args.min_iters,
                         mode=args.mode, quiet=args.quiet, command=script_command())
    d = run_targets(targets, config, console)

    def ratio(key: str, bs: int) -> float | None:
        r = row(d, key)
        from bonedeploy.bench.render.report import speedup

        return speedup(d, r, "compute", bs) if r else None

    int8 = (row(d, "onnx-int8") or {}).get("parity") or {}
    checks = [check("ONNX int8 throughput ÷ PyTorch fp32 eager, batch 8", ratio("onnx-int8", 8), ">=", 3.0, "×"),
              check("ONNX int8 top-1 agreement with PyTorch fp32", int8.get("top1_agreement"), ">=", 0.98)]
    checks += [check(f"ONNX fp32 throughput ÷ PyTorch fp32 eager, batch {bs}", ratio("onnx-fp32", bs),
                     ">=", 1.0, "×") for bs in config.batch_sizes]
    preamble = (f"CPU backends on {d['machine']['cpu']} ({d['machine']['cores']} cores)\n\n"
                f"Model: `{run / CHECKPOINT}` and its ONNX exports. Every row below was measured on "
                "this CPU with onnxruntime's CPUExecutionProvider or PyTorch on the CPU. No GPU and "
                "no TensorRT rows here: GPU rows come from `benchmarks/gpu_torch.py` on a GPU "
                "machine, and TensorRT rows need a machine with TensorRT and an NVIDIA GPU.")
    write_results(d, checks, preamble, args.out, "", console)


if __name__ == "__main__":
    main()
