#!/usr/bin/env python
"""PyTorch backend modes on a CUDA GPU: fp32 eager, fp16, fp16 + CUDA graph, and (``--compile``)
torch.compile max-autotune, at batch 1 and 128, for the seed's selected AlexNet.

Ratios are against fp32 eager measured in the same run. Targets (issue #6, H100, PyTorch 2.11):
the torch backend with fp16 + CUDA graph must reach 0.31 ms at batch 1 and 30,800 images/s at
batch 128 (0.35 ms is the Inference issue's bound); torch.compile max-autotune reached 0.25 ms and
49,200 images/s (after ~3 minutes of autotuning). Latency does not depend on the weights, so
without ``--checkpoint`` a freshly initialised AlexNet checkpoint is written to a temporary folder;
parity (fp16 vs fp32) is then measured on synthetic radiographs.

Without CUDA it prints why and exits 0: the rows need a GPU machine.

    python benchmarks/gpu_torch.py                 # ~1 minute on an H100
    python benchmarks/gpu_torch.py --compile       # + ~3 minutes of autotuning
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

from rich.console import Console

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import RESULTS, check, row, run_targets, script_command, write_results  # noqa: E402

from bonedeploy.bench import BenchConfig  # noqa: E402
from bonedeploy.bench.targets import torch_targets  # noqa: E402
from bonedeploy.models.alexnet import SELECTED  # noqa: E402


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--checkpoint", type=Path, help="A bonedeploy best.pt (default: fresh weights).")
    p.add_argument("--model", default=SELECTED, help="Model for fresh weights.")
    p.add_argument("--compile", action="store_true", help="Add torch.compile max-autotune.")
    p.add_argument("--batch-sizes", default="1,128")
    p.add_argument("--duration", type=float, default=3.0)
    p.add_argument("--warmup", type=float, default=0.2)
    p.add_argument("--min-iters", type=int, default=10)
    p.add_argument("--parity-n", type=int, default=48, help="Synthetic parity images.")
    p.add_argument("--out", type=Path, default=RESULTS)
    p.add_argument("--quiet", action="store_true")
    p.add_argument("--allow-cpu", action="store_true",
                   help="Without CUDA, still run (fp32 on the CPU; the CUDA rows are listed "
                        "unavailable): checks the script, measures nothing of a GPU.")
    return p.parse_args(argv)


def fresh_checkpoint(model: str, folder: Path) -> Path:
    import torch

    from bonedeploy.artefacts.card import ModelCard
    from bonedeploy.artefacts.checkpoint import save_checkpoint
    from bonedeploy.models import create_model

    torch.manual_seed(0)
    net = create_model(model).eval()
    path = folder / "best.pt"
    save_checkpoint(path, {"card": ModelCard(model).to_dict(), "model_kwargs": {},
                           "state_dict": net.state_dict(), "note": "untrained weights: timing only"})
    return path


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    console = Console(width=150)
    try:
        import torch
    except ImportError:
        console.print("skipped: PyTorch is not installed (pip install 'bonedeploy[train]')")
        return 0
    if not torch.cuda.is_available() and not args.allow_cpu:
        console.print("skipped: no CUDA GPU on this machine; the PyTorch GPU rows need one")
        return 0
    with tempfile.TemporaryDirectory(prefix="bonedeploy-gpu-bench-") as tmp:
        ckpt = args.checkpoint or fresh_checkpoint(args.model, Path(tmp))
        targets = torch_targets(ckpt, compile=args.compile)
        config = BenchConfig(batch_sizes=tuple(int(b) for b in args.batch_sizes.split(",")),
                             duration_s=args.duration, warmup_s=args.warmup,
                             min_iterations=args.min_iters, mode="compute", compile=args.compile,
                             parity_n=args.parity_n, quiet=args.quiet, command=script_command(),
                             isolate=False, cold_start_runs=0)  # one CUDA context; starts: cpu_backends.py
        d = run_targets(targets, config, console)

    def p50(key: str, bs: int) -> float | None:
        r = row(d, key)
        t = r and (r.get("timings") or {}).get("compute", {}).get(str(bs))
        return t["p50_ms"] if t else None

    def rate(key: str, bs: int) -> float | None:
        r = row(d, key)
        t = r and (r.get("timings") or {}).get("compute", {}).get(str(bs))
        return t["images_per_s"] if t else None

    gpu_facts = d["machine"].get("gpu") or {"name": "no GPU (CPU run)", "driver": "none"}
    gpu = gpu_facts["name"]
    checks = [check(f"fp16 + CUDA graph p50 at batch 1 (H100 target; this card: {gpu})",
                    p50("torch-fp16-graph", 1), "<=", 0.35, " ms"),
              check("fp16 + CUDA graph images/s at batch 128 (H100 target)",
                    rate("torch-fp16-graph", 128), ">=", 30800)]
    if args.compile:
        checks += [check("torch.compile max-autotune p50 at batch 1 (H100 reference)",
                         p50("torch-compile", 1), "<=", 0.25, " ms"),
                   check("torch.compile max-autotune images/s at batch 128 (H100 reference)",
                         rate("torch-compile", 128), ">=", 49200)]
    weights = str(args.checkpoint) if args.checkpoint else f"freshly initialised {args.model}"
    where = (f"Every row below ran on this GPU ({gpu}, driver {gpu_facts['driver']}) through "
             "bonedeploy's torch backend. The targets were set on an H100: on another card compare "
             "the ratios, not the absolute numbers." if torch.cuda.is_available() else
             "**--allow-cpu without CUDA: the fp32 row ran on the CPU, the CUDA rows could not "
             "run; a check of this script, not a GPU measurement.**")
    preamble = (f"PyTorch backend modes on {gpu}\n\n"
                f"Model: {weights}. {where} "
                "CPU rows come from `benchmarks/cpu_backends.py`; TensorRT rows need a machine with "
                "TensorRT.")
    write_results(d, checks, preamble, args.out, "-torch", console)
    return 0


if __name__ == "__main__":
    sys.exit(main())
