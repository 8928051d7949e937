"""Is decoding hidden behind the model? End-to-end folder inference vs model-only throughput.

Over a folder of synthetic PNGs (``bonedeploy.data.synth``) with the fp32 ONNX of the seed's AlexNet
(random weights: speed does not depend on them), at one batch size:

- model-only: ``backend.infer`` on one preprocessed batch held in memory, as many calls as the
  folder has batches;
- end-to-end: ``run_inference`` over the folder (list, decode + preprocess in the worker pool,
  infer, write the CSV), timed from the first batch to the last row (model load excluded).

Prints end-to-end / model-only (target >= 0.9 on the 2-core CPU) and writes
``benchmarks/results/infer_folder-<machine>.{md,json}`` with the command. Repeats alternate the
two measurements and report the median, so drift in a shared machine hits both alike.

    python benchmarks/infer_folder.py                       # 256 images, batch 8
    python benchmarks/infer_folder.py --n 16 --repeats 1 --no-write   # smoke test
"""

from __future__ import annotations

import argparse
import math
import shlex
import statistics
import sys
import tempfile
import time
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"
SELECTED = "alexnet_d08_wd1e-3"


def ensure_dataset(work: Path, n: int) -> Path:
    from bonedeploy.data.synth import SynthConfig, generate_dataset

    root = work / f"synth-n{n}"
    if not (root / "synth.json").is_file():
        print(f"generating {n} synthetic radiographs in {root} ...", flush=True)
        generate_dataset(root, SynthConfig(n=n, seed=0), overwrite=root.exists())
    return root


def ensure_onnx(work: Path, model_name: str) -> Path:
    """Random-init fp32 ONNX with bonedeploy metadata (torch needed only to make it once)."""
    path = work / f"{model_name}.fp32.onnx"
    if path.is_file():
        return path
    import onnx
    import torch

    from bonedeploy.artefacts.card import ModelCard
    from bonedeploy.models import create_model

    print(f"exporting a random-init {model_name} to {path} ...", flush=True)
    torch.manual_seed(0)
    model = create_model(model_name).eval()
    tmp = path.with_suffix(".tmp.onnx")
    torch.onnx.export(model, torch.zeros(1, 1, 400, 400), tmp, input_names=["input"], output_names=["logits"],
                      dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}}, opset_version=17, dynamo=False)
    proto = onnx.load(tmp)
    onnx.helper.set_model_props(proto, ModelCard(model=model_name).to_props())
    onnx.save(proto, path)
    tmp.unlink()
    return path


def model_only(backend, x, calls: int) -> float:
    """Images/s of ``calls`` inferences on one preprocessed in-memory batch."""
    backend.infer(x)
    t0 = time.perf_counter()
    for _ in range(calls):
        backend.infer(x)
    return calls * len(x) / (time.perf_counter() - t0)


def end_to_end(onnx_path: Path, data: Path, out: Path, batch: int, workers, pool: str) -> tuple[float, dict]:
    from bonedeploy.infer.run import InferConfig, run_inference

    Path(str(out) + ".partial").unlink(missing_ok=True)  # left by an interrupted benchmark
    r = run_inference(InferConfig(engine=onnx_path, inputs=(data,), out=out, batch_size=batch,
                                  workers=workers, pool=pool))
    if r.errors:
        raise SystemExit(f"{len(r.errors)} images failed: {r.errors[:3]}")
    return r.images_per_s, r.backend


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=256, help="synthetic images in the folder")
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--model", default=SELECTED, help="registry name exported when --onnx is not given")
    ap.add_argument("--onnx", type=Path, help="use this fp32 ONNX instead of exporting one")
    ap.add_argument("--workers", type=int, default=None, help="decoder workers (default: cores - 1)")
    ap.add_argument("--pool", default="process", help="process or thread (comma-separated to compare)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--work-dir", type=Path, default=Path(tempfile.gettempdir()) / "bonedeploy-infer-bench")
    ap.add_argument("--results-dir", type=Path, default=RESULTS)
    ap.add_argument("--no-write", action="store_true", help="print only (smoke tests)")
    args = ap.parse_args(argv)

    from bonedeploy.util.machine import machine_info, machine_slug
    from bonedeploy.data.decode import decode_batch, default_workers

    args.work_dir.mkdir(parents=True, exist_ok=True)
    data = ensure_dataset(args.work_dir, args.n)
    onnx_path = args.onnx or ensure_onnx(args.work_dir, args.model)
    from bonedeploy.data.folders import list_images

    paths, _ = list_images(data)
    bs = args.batch_size
    calls = math.ceil(len(paths) / bs)
    pools = [p.strip() for p in args.pool.split(",") if p.strip()]
    samples: dict[str, list[float]] = {"model_only": [], **{f"e2e_{p}": [] for p in pools}}
    backend_info: dict = {}
    # The same backend options as run_inference uses (e.g. no thread spinning beside decoders).
    from bonedeploy.infer.run import InferConfig, open_engine

    same = InferConfig(engine=onnx_path, inputs=(data,), batch_size=bs, workers=args.workers)
    with open_engine(same) as backend:
        x = decode_batch(paths[:bs], backend.card.preprocess).x
        for rep in range(args.repeats):
            samples["model_only"].append(model_only(backend, x, calls))
            backend_info = backend.describe()
            for pool in pools:
                rate, _ = end_to_end(onnx_path, data, args.work_dir / "preds.csv", bs, args.workers, pool)
                samples[f"e2e_{pool}"].append(rate)
            print(f"repeat {rep + 1}/{args.repeats}: " + ", ".join(f"{k} {v[-1]:.2f} img/s" for k, v in samples.items()),
                  flush=True)
    med = {k: statistics.median(v) for k, v in samples.items()}
    ratios = {k: med[k] / med["model_only"] for k in med if k.startswith("e2e_")}
    command = "python benchmarks/infer_folder.py " + " ".join(shlex.quote(a) for a in (argv or sys.argv[1:]))
    info = machine_info()
    report = {
        "benchmark": "infer_folder", "command": command.strip(), "images": len(paths), "batch_size": bs,
        "model": args.model if not args.onnx else str(args.onnx), "onnx": str(onnx_path),
        "workers": args.workers if args.workers is not None else default_workers(),
        "repeats": args.repeats, "images_per_s_median": med, "samples": samples,
        "ratio_e2e_over_model_only": ratios, "target_ratio": 0.9, "backend": backend_info, "machine": info,
    }
    lines = [f"# infer_folder on {machine_slug(info)}", "", f"`{report['command']}`", "",
             f"{len(paths)} synthetic PNGs, fp32 ONNX {report['model']}, batch {bs}, "
             f"{report['workers']} decoder worker(s), onnxruntime {backend_info.get('providers')} "
             f"{backend_info.get('threads')} threads; median of {args.repeats}.", "",
             "| measurement | images/s | ratio to model-only |", "|---|---:|---:|"]
    lines += [f"| {k} | {v:.2f} | {v / med['model_only']:.3f} |" for k, v in med.items()]
    lines += ["", f"CPU: {info['cpu']} ({info['cores']} logical cores); target ratio >= 0.9."]
    print("\n".join(lines))
    if not args.no_write:
        from bonedeploy.util.fs import write_json, write_text

        stem = args.results_dir / f"infer_folder-{machine_slug(info)}"
        write_json(stem.with_suffix(".json"), report)
        write_text(stem.with_suffix(".md"), "\n".join(lines) + "\n")
        print(f"wrote {stem}.md and .json")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
