#!/usr/bin/env python
"""One training epoch of the seed's AlexNet: bonedeploy's trainer against the seed's naive loop.

An epoch is what the seed did each epoch: one training pass over the 281 training images
(batch 32, Adam, random horizontal flips), then eval-mode loss/accuracy over the training set
and the 72 validation images. Both loops run in this process on the same synthetic images
(`bonedeploy synth`, 353 images split 281/72 like the seed), same model and device:

- bonedeploy: images decoded once into one tensor (on the GPU when there is one), flips on the
  device, index batches, bf16 autocast + channels_last on CUDA (fp32 on the CPU);
- naive (the seed's way): torchvision ImageFolder + DataLoader decoding every PNG every epoch,
  transforms ToTensor -> CenterCrop(400) -> RandomHorizontalFlip -> Grayscale, fp32.

Reported: the median of ``--epochs`` timed epochs after one warm-up epoch each (cuDNN autotuning,
allocator), the one-off decode time of bonedeploy's cache, and naive/bonedeploy as a ratio.
Targets (issue #3): on an H100 an AlexNet epoch <= 0.25 s (the seed's log: 15 s); on the CPU,
never slower than the naive loop.

    python benchmarks/train_epoch.py                          # GPU: ~1 minute
    python benchmarks/train_epoch.py --quick --model vgg8     # checks that it runs (CPU)
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import RESULTS, check, script_command  # noqa: E402

from bonedeploy.util.fs import write_json, write_text  # noqa: E402
from bonedeploy.util.machine import machine_info, machine_slug  # noqa: E402
from bonedeploy.models.alexnet import SELECTED  # noqa: E402


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default=SELECTED)
    p.add_argument("--n", type=int, help="Synthetic images (default 353: 281 train / 72 val).")
    p.add_argument("--data", type=Path, help="Use this image folder instead of generating one.")
    p.add_argument("--epochs", type=int, help="Timed epochs per loop, after 1 warm-up (default 3).")
    p.add_argument("--batch-size", type=int, help="Default 32, the seed's.")
    p.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    p.add_argument("--precision", default="auto", choices=("auto", "fp32", "bf16"))
    p.add_argument("--naive-workers", type=int, default=0,
                   help="DataLoader workers of the naive loop (the seed's default: 0).")
    p.add_argument("--quick", action="store_true",
                   help="24 images, batch 8, 1 timed epoch unless given: checks that the script runs.")
    p.add_argument("--no-naive", action="store_true",
                   help="Time only bonedeploy's loop (e.g. a second precision; no ratio).")
    p.add_argument("--tag", help="Suffix of the results files: train_epoch-<machine>-<tag>.md.")
    p.add_argument("--out", type=Path, default=RESULTS, help="Folder for the results files.")
    args = p.parse_args(argv)
    defaults = {"n": 24, "batch_size": 8, "epochs": 1} if args.quick else \
        {"n": 353, "batch_size": 32, "epochs": 3}
    for key, value in defaults.items():  # what is given wins, --quick or not
        if getattr(args, key) is None:
            setattr(args, key, value)
    return args


def timed_epochs(step, epochs: int, sync) -> list[float]:
    step()  # warm-up: cuDNN autotuning, allocator, lazy init
    sync()
    times = []
    for _ in range(epochs):
        t0 = time.perf_counter()
        step()
        sync()
        times.append(time.perf_counter() - t0)
    return times


def bonedeploy_epochs(args, data_root: Path) -> dict:
    import torch

    from bonedeploy.models import create_model
    from bonedeploy.data.preprocess import SEED_SPEC
    from bonedeploy.training import Reporter, TrainConfig
    from bonedeploy.training.dataset import load_training_data
    from bonedeploy.training.loop import evaluate, train_epoch
    from bonedeploy.training.runtime import configured, resolve_runtime, synchronize

    cfg = TrainConfig(model=args.model, data=str(data_root), batch_size=args.batch_size,
                      device=args.device, precision=args.precision).resolve()
    rt = resolve_runtime(cfg.device, cfg.precision, None, False)
    t0 = time.perf_counter()
    data = load_training_data(cfg, SEED_SPEC, Reporter())
    x_tr, y_tr, x_va, y_va = data.on(rt.device)
    synchronize(rt)
    decode_s = time.perf_counter() - t0
    with configured(rt):
        torch.manual_seed(0)
        gen = torch.Generator().manual_seed(0)
        model = create_model(cfg.model, **cfg.model_kwargs).to(rt.device)
        if rt.channels_last:
            model = model.to(memory_format=torch.channels_last)
        opt = torch.optim.Adam(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay,
                               fused=True if rt.is_cuda else None)
        eval_bs = max(cfg.batch_size, 128 if rt.is_cuda else cfg.batch_size)

        def epoch():
            train_epoch(model, opt, x_tr, y_tr, batch_size=cfg.batch_size,
                        hflip_p=SEED_SPEC.hflip_p, gen=gen, rt=rt)
            evaluate(model, x_tr, y_tr, batch_size=eval_bs, rt=rt)
            evaluate(model, x_va, y_va, batch_size=eval_bs, rt=rt)

        times = timed_epochs(epoch, args.epochs, lambda: synchronize(rt))
    return {"times_s": times, "epoch_s": statistics.median(times), "decode_once_s": decode_s,
            "runtime": rt.describe(), "n_train": len(y_tr), "n_val": len(y_va),
            "split": data.split}


def naive_epochs(args, data_root: Path, split: dict, device: str) -> dict:
    """The seed's loop: ImageFolder + DataLoader, PNGs decoded every epoch, fp32."""
    import torch
    import torch.nn.functional as F
    from torch.utils.data import DataLoader, Subset
    from torchvision import datasets, transforms

    from bonedeploy.models import create_model
    from bonedeploy.training import TrainConfig

    cfg = TrainConfig(model=args.model).resolve()
    tf = [transforms.ToTensor(), transforms.CenterCrop(400)]
    train_set = datasets.ImageFolder(str(data_root), transforms.Compose(
        [*tf, transforms.RandomHorizontalFlip(), transforms.Grayscale()]))
    eval_set = datasets.ImageFolder(str(data_root), transforms.Compose([*tf, transforms.Grayscale()]))
    index = {Path(p).relative_to(data_root).as_posix(): i for i, (p, _) in enumerate(train_set.samples)}
    tr_idx = [index[e["path"]] for e in split["train"]]
    va_idx = [index[e["path"]] for e in split["val"]]
    loader = dict(batch_size=args.batch_size, num_workers=args.naive_workers,
                  pin_memory=device == "cuda")
    train_dl = DataLoader(Subset(train_set, tr_idx), shuffle=True, **loader)
    train_eval_dl = DataLoader(Subset(eval_set, tr_idx), **loader)
    val_dl = DataLoader(Subset(eval_set, va_idx), **loader)
    torch.manual_seed(0)
    model = create_model(cfg.model, **cfg.model_kwargs).to(device)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)

    def epoch():
        model.train()
        for x, y in train_dl:
            x, y = x.to(device), y.to(device)
            loss = F.cross_entropy(model(x), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
        model.eval()
        with torch.no_grad():
            for dl in (train_eval_dl, val_dl):
                for x, y in dl:
                    x, y = x.to(device), y.to(device)
                    F.cross_entropy(model(x), y).item()

    def sync():
        if device == "cuda":
            torch.cuda.synchronize()

    times = timed_epochs(epoch, args.epochs, sync)
    return {"times_s": times, "epoch_s": statistics.median(times), "workers": args.naive_workers}


def make_data(args, tmp: Path) -> Path:
    if args.data:
        return args.data
    from bonedeploy.data.synth import SynthConfig
    from bonedeploy.data.synth.dataset import generate_dataset

    root = tmp / "synth"
    generate_dataset(root, SynthConfig(n=args.n, seed=0))
    return root


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="bonedeploy-train-bench-") as tmp:
        root = make_data(args, Path(tmp))
        ours = bonedeploy_epochs(args, root)
        device = ours["runtime"]["device"].split(":")[0]
        split = ours.pop("split")
        naive = None if args.no_naive else naive_epochs(args, root, split, device)
    ratio = naive["epoch_s"] / ours["epoch_s"] if naive else None
    info = machine_info()
    where = ours["runtime"]["device_name"]
    versus = f", naive {naive['epoch_s']:.3f} s -> {ratio:.1f}x" if naive else ""
    print(f"{args.model} epoch ({ours['n_train']} train + eval of {ours['n_train']}+{ours['n_val']}) "
          f"on {where} ({ours['runtime']['precision']}): bonedeploy {ours['epoch_s']:.3f} s{versus} "
          f"(decode once: {ours['decode_once_s']:.2f} s)")
    checks = []
    if naive:
        checks.append(check("bonedeploy epoch faster than the naive loop (naive / bonedeploy)",
                            ratio, ">=", 1.0))
    if device == "cuda" and args.model.startswith("alexnet"):
        checks.append(check(f"AlexNet epoch on the GPU (H100 target; this card: {where})",
                            ours["epoch_s"], "<=", 0.25, " s"))
    result = {"benchmark": "train_epoch", "command": script_command(), "model": args.model,
              "batch_size": args.batch_size, "quick": args.quick, "bonedeploy": ours,
              "naive": naive, "ratio": ratio, "targets": checks, "machine": info}
    base = args.out / "-".join(["train_epoch", machine_slug(info), *([args.tag] if args.tag else [])])
    write_json(base.with_suffix(".json"), result)
    write_text(base.with_suffix(".md"), markdown(result))
    print(f"wrote {base.with_suffix('.md')} and .json")
    return 0


def markdown(r: dict) -> str:
    o, n, m = r["bonedeploy"], r["naive"], r["machine"]
    gpu = m.get("gpu") or {}
    lines = [
        f"# Training epoch: bonedeploy vs the naive loop ({r['model']})", "",
        "```", r["command"], "```", "",
        f"Machine: {m['cpu']} ({m['cores']} cores), GPU {gpu.get('name', 'none')}"
        f"{' driver ' + gpu['driver'] if gpu else ''}; torch {m['versions'].get('torch')}, "
        f"torchvision {m['versions'].get('torchvision')}, bonedeploy {m['versions'].get('bonedeploy')}, "
        f"git {m.get('git_commit')}."
        + (" **--quick: a smoke run, not a measurement.**" if r["quick"] else ""),
        "",
        f"Epoch = training pass over {o['n_train']} images (batch {r['batch_size']}) + eval-mode "
        f"passes over the {o['n_train']} training and {o['n_val']} validation images, as the seed. "
        "Median of the timed epochs after one warm-up epoch.", "",
        "| loop | device / precision | epoch (median) | epochs timed (s) |",
        "|---|---|---:|---|",
        f"| bonedeploy (decoded once, on-device flips) | {o['runtime']['device_name']} / "
        f"{o['runtime']['precision']}{', channels_last' if o['runtime']['channels_last'] else ''} | "
        f"{o['epoch_s']:.3f} s | {', '.join(f'{t:.3f}' for t in o['times_s'])} |",
        *([f"| naive (ImageFolder + DataLoader, {n['workers']} workers, PNG decode every epoch) | "
           f"{o['runtime']['device_name']} / fp32 | {n['epoch_s']:.3f} s | "
           f"{', '.join(f'{t:.3f}' for t in n['times_s'])} |"] if n else []), "",
        (f"Ratio naive / bonedeploy: **{r['ratio']:.1f}x**. " if n else "Naive loop not run (--no-naive). ")
        + f"bonedeploy's one-off decode of all images: {o['decode_once_s']:.2f} s.", "",
        *(["| target | goal | measured | verdict |", "|---|---:|---:|---|"] if r["targets"] else []),
        *[f"| {c['target']} | {c['goal']} | {c['measured']:.3g} | {c['verdict']} |" for c in r["targets"]],
        "",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
