#!/usr/bin/env python
"""DDP against one process: the same model, data, seed and global batch, trained once by
``bonedeploy train`` and once by ``torchrun --nproc-per-node N -m bonedeploy train``.

Both runs are real command lines in their own processes, on the same synthetic images
(``bonedeploy synth``, split 80/20 as the seed). Reported per run: the median epoch time (the
history's per-epoch seconds: training pass + the all-reduced evaluations, first epoch left out as
warm-up), the wall time of the whole command (start-up, rendezvous, decoding, report), and the
final and best validation accuracy. The load average before and after is recorded: on a shared
machine other processes' load inflates every figure.

On a CPU the N processes share the cores one process's threads already use (torchrun sets
OMP_NUM_THREADS=1 per worker), and DDP adds the gradient all-reduce and SyncBatchNorm's two
all-reduces per BatchNorm layer (over loopback), so no speed-up is expected there: the figure
shows what the CPU gloo path costs. On GPUs each rank has its own device; only a GPU run (or
several nodes) can show a speed-up, and none is claimed until one is measured.

    python benchmarks/ddp.py                                  # CPU: 1 process vs 2 gloo processes
    python benchmarks/ddp.py --device cuda --nproc 1          # GPU: 1 process vs DDP (NCCL) at world size 1
    python benchmarks/ddp.py --quick                          # checks that it runs (CPU, ~2 min)
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import RESULTS, script_command  # noqa: E402

from bonedeploy.util.fs import write_json, write_text  # noqa: E402
from bonedeploy.util.machine import machine_info, machine_slug  # noqa: E402

TIMEOUT_S = 3600


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="resnet16", help="A model with BatchNorm, so SyncBatchNorm is in the figure.")
    p.add_argument("--n", type=int, help="Synthetic images (default 80: 64 train / 16 val).")
    p.add_argument("--data", type=Path, help="Use this image folder instead of generating one.")
    p.add_argument("--epochs", type=int, help="Epochs per run (default 3; the first is warm-up).")
    p.add_argument("--batch-size", type=int, help="Global batch (default 32, the seed's).")
    p.add_argument("--nproc", type=int, default=2, help="DDP processes (torchrun --nproc-per-node).")
    p.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    p.add_argument("--quick", action="store_true", help="40 images, batch 8, 2 epochs: checks that it runs.")
    p.add_argument("--tag", help="Suffix of the results files: ddp-<machine>-<tag>.md.")
    p.add_argument("--out", type=Path, default=RESULTS, help="Folder for the results files.")
    args = p.parse_args(argv)
    defaults = {"n": 40, "batch_size": 8, "epochs": 2} if args.quick else {"n": 80, "batch_size": 32, "epochs": 3}
    for key, value in defaults.items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    return args


def synth(folder: Path, n: int) -> Path:
    subprocess.run([sys.executable, "-m", "bonedeploy", "synth", str(folder), "--n", str(n), "--seed", "0",
                    "--quiet"], check=True, timeout=TIMEOUT_S)
    return folder


def train_args(args: argparse.Namespace, data: Path, out: Path) -> list[str]:
    return ["-m", "bonedeploy", "train", str(data), "--model", args.model, "--out", str(out),
            "--epochs", str(args.epochs), "--batch-size", str(args.batch_size), "--device", args.device,
            "--precision", "fp32", "--seed", "0", "--quiet"]


def run(label: str, argv: list[str], out: Path, env: dict[str, str]) -> dict:
    """One training command; its figures from the run folder it wrote."""
    load = os.getloadavg()[0]
    cpu0 = _children_cpu_s()
    t0 = time.perf_counter()
    proc = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=TIMEOUT_S)
    wall = time.perf_counter() - t0
    cpu = _children_cpu_s() - cpu0
    if proc.returncode != 0:
        raise SystemExit(f"{label} failed (exit {proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    metrics = json.loads((out / "metrics.json").read_text())
    report = json.loads((out / "report.json").read_text())
    history = metrics["history"]
    epochs = [h["seconds"] for h in history]
    timed = epochs[1:] or epochs
    return {"label": label, "command": " ".join(argv[argv.index("-m"):] if "-m" in argv else argv),
            "launcher": argv[:argv.index("-m")] if "-m" in argv else [], "wall_s": wall, "cpu_s": cpu,
            "epoch_median_s": statistics.median(timed), "epochs_s": epochs,
            "final_val_acc": history[-1]["val_acc"], "final_val_loss": history[-1]["val_loss"],
            "best_epoch": metrics["best_epoch"], "best_val_acc": metrics["best"]["val_acc"],
            "report_val_acc": report["val"]["accuracy"], "runtime": metrics["runtime"],
            "load_before": load, "load_after": os.getloadavg()[0]}


def _children_cpu_s() -> float:
    """User + system CPU seconds of every finished child process (torchrun's workers included:
    torchrun waits for them): what the run cost the machine, which other load does not inflate."""
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def measure(args: argparse.Namespace, data: Path, work: Path) -> list[dict]:
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    env["PYTHONUNBUFFERED"] = "1"
    one = run("1 process", [sys.executable, *train_args(args, data, work / "one")], work / "one", env)
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={args.nproc}"]
    ddp = run(f"{args.nproc} DDP processes ({'nccl' if args.device == 'cuda' else 'gloo'})",
              [*torchrun, *train_args(args, data, work / "ddp")], work / "ddp", env)
    return [one, ddp]


def markdown(r: dict) -> str:
    one, ddp = r["runs"]
    ratio = ddp["epoch_median_s"] / one["epoch_median_s"]
    m = r["machine"]
    lines = [
        f"# DDP against one process ({r['model']}, {r['device']})", "", "```", r["command"], "```", "",
        f"Machine: {m['cpu']} ({m['cores']} cores), GPU {m['gpu']['name'] if m.get('gpu') else 'none'}; "
        f"torch {r['versions']['torch']}, bonedeploy {r['versions']['bonedeploy']}, git {r['versions']['git_commit']}.",
        "",
        f"Data: {r['n_images']} synthetic images (`bonedeploy synth --seed 0`), split 80/20; global batch "
        f"{r['batch_size']}, {r['epochs']} epochs, fp32, seed 0. Epoch = training pass + evaluation of the "
        "train and validation sets (all-reduced under DDP); median over the epochs after the first.",
        "",
        "| run | epoch (median) | epochs (s) | whole command: wall s / CPU s | final val acc | best val acc (epoch) | load avg before / after |",
        "|---|---:|---|---:|---:|---:|---|",
    ]
    for x in r["runs"]:
        lines.append(f"| {x['label']} | {x['epoch_median_s']:.2f} s | {', '.join(f'{s:.2f}' for s in x['epochs_s'])} | "
                     f"{x['wall_s']:.1f} / {x['cpu_s']:.1f} | {x['final_val_acc']:.3f} | {x['best_val_acc']:.3f} ({x['best_epoch']}) | "
                     f"{x['load_before']:.2f} / {x['load_after']:.2f} |")
    cpu_ratio = ddp["cpu_s"] / one["cpu_s"]
    trend = "about the same" if 0.95 <= ratio <= 1.05 else ("slower" if ratio > 1 else "faster")
    lines += ["", f"Epoch time, DDP / one process: **{ratio:.2f}x** ({trend}); "
              f"CPU seconds of the whole command, DDP / one process: **{cpu_ratio:.2f}x**.", "",
              "Wall times on a shared machine move with the other processes' load (the load average is "
              "beside each run); the CPU seconds (user + system of every process of the command) do not: "
              "they are what each way of training cost.", ""]
    if r["device"] == "cpu":
        lines += [
            f"No speed-up on {m['cores']} cores, as expected: the {ddp['label'].split()[0]} processes run one "
            "thread each (torchrun's OMP_NUM_THREADS=1) on the same cores that the single process's "
            "intra-op threads already keep busy, so the arithmetic per epoch is the same and it is done by "
            "the same cores. DDP then adds work one process does not do: the gradient all-reduce after "
            "every step and two all-reduces per BatchNorm layer per forward pass (SyncBatchNorm, over "
            "loopback with gloo), each process's evaluation share plus the all-reduce of its figures, and "
            "a separate decode of the whole set per process: more CPU seconds for the same epochs. A "
            "speed-up needs a device (GPU) or cores (a node) per rank. No multi-GPU or multi-node figure "
            "is claimed here.",
            "",
            "The accuracies are not expected to be equal to the last digit: the DDP run draws its "
            "batch order from DistributedSampler (seed + epoch) and its dropout per rank, the single "
            "process from its own generator. A few epochs on a few images is not where a model learns; "
            "that DDP computes the single process's step is shown by the tests (one step on two "
            "half-batches equals one step on the whole batch to 1e-5: tests/training/test_ddp.py), "
            "not by these accuracies.",
        ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from bonedeploy.training.state import versions

    with tempfile.TemporaryDirectory(prefix="bonedeploy-ddp-") as tmp:
        work = Path(tmp)
        data = args.data or synth(work / "data", args.n)
        n_images = sum(1 for p in data.rglob("*.png"))
        runs = measure(args, data, work)
    machine = machine_info()
    r = {"command": script_command(), "model": args.model, "device": args.device, "nproc": args.nproc,
         "n_images": n_images, "batch_size": args.batch_size, "epochs": args.epochs, "quick": args.quick,
         "machine": machine, "versions": versions(), "runs": runs,
         "ratio_epoch_ddp_over_one": runs[1]["epoch_median_s"] / runs[0]["epoch_median_s"],
         "ratio_cpu_ddp_over_one": runs[1]["cpu_s"] / runs[0]["cpu_s"]}
    base = args.out / ("ddp-" + machine_slug(machine) + (f"-{args.tag}" if args.tag else ""))
    write_json(base.with_suffix(".json"), r)
    write_text(base.with_suffix(".md"), markdown(r))
    print(markdown(r))
    print(f"wrote {base.with_suffix('.md')}, .json")
    return 0


if __name__ == "__main__":
    sys.exit(main())
