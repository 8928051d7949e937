"""``bonedeploy demo``: the whole toolkit on synthetic radiographs, with no data of the user's.

synth (train/val + an unlabelled test folder, answer key aside) -> train the seed's selected
AlexNet -> export fp32/fp16/int8 ONNX (+ TensorRT engine where possible) -> infer on the test
folder -> score against the answer key -> infer on a few generated non-radiographs (the
out-of-distribution gate at work) -> bench -> one summary. Each step is the library function its
CLI command calls; the demo only chooses sizes.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

from bonedeploy.errors import ConfigError, GateFailedError
from bonedeploy.ui.markdown import pipe_table
from bonedeploy.util.fs import write_json, write_text
from bonedeploy.models.alexnet import SELECTED
from bonedeploy.util.defaults import none_means_default

Log = Callable[[str], None]


@dataclass(frozen=True)
class DemoSize:
    """How much work the demo does. The CPU schedule is tuned to finish in minutes on 2 cores."""

    n: int  # labelled images (split 8:2 into train/val)
    test_n: int
    epochs: int
    lr: float
    batch_size: int
    bench_batch_sizes: tuple[int, ...]
    bench_duration: float
    precise_bn: bool = False  # short schedules: BatchNorm running stats lag the weights
    eval_train: bool = True  # off on the CPU: a fifth of the epoch for a number the demo never uses
    cold_start_runs: int = 1  # timed `infer` starts of the deployed artefact (0: none)
    # Held out for validation. The OOD gate's threshold is the largest validation score below
    # 1 / fpr - 1 images: 1 / (n + 1) of new radiographs refused on average (eval.ood).
    val_fraction: float = 0.2
    # parity images per artefact (None: the whole validation split; a subset once passed an int8
    # file that flipped one of the other 40 images, which bench then refused)
    parity_n: int | None = None
    non_radiographs: int = 2  # generated images of each kind shown to the gate


SIZES = {
    # The seed's schedule (100 epochs, lr 1e-4) for the GPU; a short, hotter one for the CPU.
    "gpu": DemoSize(n=353, test_n=200, epochs=100, lr=1e-4, batch_size=32,
                    bench_batch_sizes=(1, 8, 32), bench_duration=3.0, cold_start_runs=3),
    # 160 train / 80 validation images: the gate's threshold rests on 80 (1.2% refused on average)
    "cpu": DemoSize(n=240, test_n=100, epochs=4, lr=1e-4, batch_size=16,
                    bench_batch_sizes=(1, 8), bench_duration=0.3, precise_bn=True,
                    eval_train=False, val_fraction=1 / 3),
    "tiny": DemoSize(n=40, test_n=12, epochs=1, lr=3e-4, batch_size=8,
                     bench_batch_sizes=(1,), bench_duration=0.1, precise_bn=True,
                     eval_train=False, cold_start_runs=0),
}


@none_means_default  # None (the CLI's 'not given') means the default below
@dataclass(frozen=True)
class DemoConfig:
    out: Path = Path("bonedeploy-demo")
    device: str = "auto"
    size: str | None = None  # gpu | cpu | tiny; default from the device
    model: str = SELECTED
    difficulty: str = "easy"
    seed: int = 0
    epochs: int | None = None
    overwrite: bool = False
    quiet: bool = False

    def resolve_size(self, cuda: bool) -> DemoSize:
        name = self.size or ("gpu" if cuda else "cpu")
        if name not in SIZES:
            raise ConfigError(f"unknown demo size {name!r}; valid sizes: {', '.join(SIZES)}")
        size = SIZES[name]
        if self.epochs is not None:
            size = DemoSize(**{**asdict(size), "epochs": self.epochs})
        return size


@dataclass
class DemoResult:
    out: Path
    summary: dict[str, Any] = field(default_factory=dict)

    @property
    def summary_path(self) -> Path:
        return self.out / "summary.json"


def _cuda_available(device: str) -> bool:
    if device == "cpu":
        return False
    import torch

    return bool(torch.cuda.is_available())


def _timed(steps: dict[str, float], name: str, log: Log):
    class _T:
        def __enter__(self):
            log(f"[{name}] …")
            self.t0 = time.perf_counter()

        def __exit__(self, *exc):
            steps[name] = round(time.perf_counter() - self.t0, 2)
            if exc[0] is None:
                log(f"[{name}] done in {steps[name]:.1f} s")

    return _T()


def run_demo(config: DemoConfig, log: Log | None = None, reporter: Any = None,
             console: Any = None) -> DemoResult:
    """Run every step; returns the summary (also written to ``out/summary.json``/``summary.md``)."""
    from bonedeploy.bench import BenchConfig, bench
    from bonedeploy.export.from_checkpoint import run_export
    from bonedeploy.export.results import ExportConfig
    from bonedeploy.infer.run import InferConfig, run_inference
    from bonedeploy.data.synth import SynthConfig, generate_dataset
    from bonedeploy.training import LineReporter, TrainConfig, train

    log = log or (lambda _m: None)
    out = Path(config.out)
    if out.exists() and any(out.iterdir()) and not config.overwrite:
        raise ConfigError(f"{out} already exists and is not empty; pass --overwrite or another --out")
    cuda = _cuda_available(config.device)
    size = config.resolve_size(cuda)
    steps: dict[str, float] = {}
    data, run = out / "data", out / "run"

    with _timed(steps, "synth", log):
        synth = generate_dataset(data, SynthConfig(n=size.n, test_n=size.test_n, seed=config.seed,
                                                   difficulty=config.difficulty), overwrite=True)
    with _timed(steps, "train", log):
        tcfg = TrainConfig(model=config.model, data=str(data), out=str(run), epochs=size.epochs,
                           lr=size.lr, batch_size=size.batch_size, device=config.device,
                           seed=config.seed, quiet=config.quiet, overwrite=True, val_fraction=size.val_fraction,
                           precise_bn=size.precise_bn, eval_train=size.eval_train,
                           # checkpoints once at the end: AlexNet's last.pt is 1.8 GB
                           save_every=3600.0)
        trained = train(tcfg, reporter or LineReporter())
    with _timed(steps, "export", log):
        exported = run_export(ExportConfig(source=run / "best.pt", parity_n=size.parity_n,
                                           precisions=("fp32", "fp16", "int8")), log=log)
    deploy = _deployable(exported)
    with _timed(steps, "infer", log):
        inferred = run_inference(InferConfig(engine=deploy, inputs=(data / "test",),
                                             out=out / "predictions.csv",
                                             labels=Path(synth["answers"]),
                                             batch_size=size.batch_size))
    with _timed(steps, "non-radiographs", log):
        strangers = _non_radiographs(deploy, out / "non_radiographs", size, config.seed)
    bench_report, bench_error = None, None
    with _timed(steps, "bench", log):
        try:
            bench_report = bench(BenchConfig(
                run_dir=run, batch_sizes=size.bench_batch_sizes, duration_s=size.bench_duration,
                warmup_s=min(0.2, size.bench_duration), mode="compute", json_path=out / "bench.json",
                md_path=out / "bench.md", plot_path=out / "bench.png", quiet=config.quiet,
                # one process, no per-row cold starts: the demo's speed table is a first look
                # (a child or a start per row costs a model load each: a minute on 2 cores);
                # `bonedeploy bench` times each row with the others idle, and its cold start
                isolate=False, other_runtimes=False, cold_start_runs=0,
                parity_n=size.parity_n),  # the images export's gate saw: the same verdicts
                console=console)
        except GateFailedError as e:  # the outputs are written; report it in the summary
            bench_error = str(e)
        cold_start = _cold_start(deploy, data / "test", size.cold_start_runs, out)
    summary = _summarise(config, size, cuda, synth, trained, exported, deploy, inferred,
                         bench_report, bench_error, steps, out)
    summary["ood"] = _ood_summary(inferred, strangers)
    summary["test"]["cold_start"] = cold_start
    write_json(out / "summary.json", summary)
    write_text(out / "summary.md", summary_markdown(summary))
    return DemoResult(out=out, summary=summary)


def _cold_start(artefact: Path, images: Path, runs: int, out: Path) -> dict[str, Any] | None:
    """The deployed artefact's cold start (``bench.coldstart``), or why it could not be had."""
    if runs < 1:
        return None
    from bonedeploy.backends import backend_for_path
    from bonedeploy.bench.coldstart import ColdStartError, measure_cold_start
    from bonedeploy.data.folders import list_images

    try:
        image = list_images([images])[0][0]
        return measure_cold_start(artefact, backend_for_path(artefact).name, image, runs, out).to_dict()
    except (ColdStartError, OSError) as e:
        return {"error": str(e)}


def _non_radiographs(artefact: Path, folder: Path, size: DemoSize, seed: int):
    """A few generated images that are not elbow radiographs (blank, noise, gradient, text,
    pattern, a chest film), written as PNGs, then `infer` on them with the deployed artefact."""
    import numpy as np
    from PIL import Image

    from bonedeploy.data.synth.ood import FAR, make_images
    from bonedeploy.infer.run import InferConfig, run_inference

    folder.mkdir(parents=True, exist_ok=True)
    for kind in (*FAR, "chest"):
        for i, image in enumerate(make_images(kind, size.non_radiographs, 400, seed=9000 + seed)):
            Image.fromarray((image * 255).round().astype(np.uint8)).save(folder / f"{kind}-{i}.png")
    return run_inference(InferConfig(engine=artefact, inputs=(folder,), out=folder / "predictions.csv",
                                     batch_size=size.batch_size))


def _ood_summary(inferred, strangers) -> dict[str, Any]:
    """The gate at work: test radiographs refused, and generated non-radiographs caught."""
    import csv

    with open(strangers.out, newline="") as fh:
        answered = [Path(r["path"]).name for r in csv.DictReader(fh) if r["status"] == "ok"]
    return {"test_n": inferred.total, "test_refused": len(inferred.rejected),
            "non_radiographs": strangers.total, "non_radiographs_refused": len(strangers.rejected),
            "answered": answered, "predictions": str(strangers.out), "notes": list(strangers.notes)}


def _deployable(exported) -> Path:
    """The artefact `infer` runs: the engine when one was built, else the fastest ONNX file that
    passed its gate on this machine (int8 on a CPU), else fp32."""
    eng = exported.engine or {}
    if eng.get("built"):
        return exported.out_dir / eng["path"]
    passed = {f.precision: f.path for f in exported.files if f.passed}
    for prec in ("int8", "fp32", "fp16"):
        if prec in passed:
            return Path(passed[prec])
    return Path(exported.files[0].path)


def _summarise(config, size, cuda, synth, trained, exported, deploy, inferred, bench_report,
               bench_error, steps, out) -> dict[str, Any]:
    m = inferred.metrics or {}
    speed = []
    # a failed gate raises after bench.json is written: its rows still show the speeds
    bench_results = (bench_report.to_dict()["results"] if bench_report is not None
                     else _written_results(out / "bench.json"))
    if bench_results:
        for r in bench_results:
            for mode, per in (r.get("timings") or {}).items():
                for bs, st in per.items():
                    speed.append({"artefact": r.get("label"), "status": r["status"], "mode": mode,
                                  "batch": int(bs), "p50_ms": st.get("p50_ms"),
                                  "images_per_s": st.get("images_per_s")})
            if not r.get("timings"):
                speed.append({"artefact": r.get("label"), "status": r["status"],
                              "reason": r.get("reason")})
    return {
        "format": "bonedeploy.demo/1",
        "device": "cuda" if cuda else "cpu",
        "size": asdict(size),
        "model": config.model,
        "difficulty": config.difficulty,
        "data": {"root": synth["out"], "counts": synth["counts"], "test_n": synth["test_n"],
                 "answers": synth["answers"]},
        "training": {"best_epoch": trained.report.get("saved_epoch"),
                     "val_accuracy": trained.report["val"].get("accuracy"),
                     "val_accuracy_ci95": trained.report["val"].get("accuracy_ci95"),
                     "val_n": trained.report["val"].get("n"),
                     "checkpoint": str(trained.best_path)},
        "export": [{"file": str(f.path), "precision": f.precision, "mb": round(f.bytes / 1e6, 1),
                    "passed": f.passed, "max_abs_dprob": (f.parity or {}).get("max_abs_dprob"),
                    "top1_agreement": (f.parity or {}).get("top1_agreement"),
                    "accuracy_delta": (f.parity or {}).get("accuracy_delta")}
                   for f in exported.files],
        "engine": {k: v for k, v in (exported.engine or {}).items() if k in
                   ("built", "path", "reason", "command", "error")},
        "test": {"artefact": str(deploy), "predictions": str(inferred.out), "n": m.get("n"),
                 "accuracy": m.get("accuracy"), "accuracy_ci95": m.get("accuracy_ci95"),
                 "sensitivity": m.get("sensitivity"), "specificity": m.get("specificity"),
                 "roc_auc": m.get("roc_auc"), "errors": len(inferred.errors)},
        "bench": {"json": str(out / "bench.json"), "md": str(out / "bench.md"),
                  "plot": str(out / "bench.png"), "gate_error": bench_error, "rows": speed},
        "seconds": steps,
        "total_seconds": round(sum(steps.values()), 1),
    }


def _written_results(path: Path) -> list[dict[str, Any]]:
    try:
        return json.loads(path.read_text()).get("results") or []
    except (OSError, ValueError):
        return []


def _pct(x: float | None) -> str:
    return "–" if x is None else f"{x:.1%}"


def _cold_start_lines(t: dict[str, Any]) -> list[str]:
    c = t.get("cold_start")
    if not c:
        return []
    if c.get("error"):  # the artefact is named in the line above
        return [f"**Cold start** of `bonedeploy infer` on it: failed: {c['error']}", ""]
    return [f"**Cold start** of `bonedeploy infer` on one image with it ({c['backend']}): "
            f"{c['median_s']:.2f} s from process start to the first row (median of {c['runs']}; "
            f"peak RSS {c['peak_rss_mb']:.0f} MB).", ""]


def _ood_lines(o: dict[str, Any] | None) -> list[str]:
    if not o:
        return []
    lines = ["", "## Out-of-distribution gate", "",
             f"- in-distribution test radiographs refused: **{o['test_refused']} of {o['test_n']}** "
             f"({_pct(o['test_refused'] / o['test_n'] if o['test_n'] else None)})",
             f"- generated non-radiographs (blank, noise, gradient, text, pattern, chest film) refused: "
             f"**{o['non_radiographs_refused']} of {o['non_radiographs']}**"
             + (f"; answered: {', '.join(o['answered'])}" if o["answered"] else "")]
    lines += [f"- note: {n}" for n in o.get("notes") or []]
    return lines


def summary_markdown(s: dict[str, Any]) -> str:
    t = s["test"]
    lo, hi = t.get("accuracy_ci95") or (None, None)
    lines = [
        "# bonedeploy demo summary", "",
        f"Model `{s['model']}` trained on {sum(s['data']['counts'].values())} synthetic radiographs "
        f"({s['difficulty']}) on {s['device']} in {s['size']['epochs']} epochs; best epoch "
        f"{s['training']['best_epoch']}, validation accuracy {_pct(s['training']['val_accuracy'])}.", "",
        f"**Test folder** ({t['n']} unseen images, scored against the answer key) with "
        f"`{Path(t['artefact']).name}`: accuracy **{_pct(t['accuracy'])}** (95% CI {_pct(lo)}–{_pct(hi)}), "
        f"sensitivity {_pct(t['sensitivity'])}, specificity {_pct(t['specificity'])}, "
        f"ROC AUC {t['roc_auc'] if t['roc_auc'] is None else round(t['roc_auc'], 3)}.", "",
        *_cold_start_lines(t), "## Parity of each artefact with the PyTorch fp32 reference", "",
        pipe_table(["file", "precision", "MB", "max abs Δprob", "top-1 agreement", "Δ accuracy", "gate"],
                   [[Path(e["file"]).name, e["precision"], e["mb"], f"{e['max_abs_dprob']:.1e}",
                     _pct(e["top1_agreement"]),
                     "–" if e["accuracy_delta"] is None else f"{e['accuracy_delta'] * 100:+.1f} pt",
                     "pass" if e["passed"] else "FAIL"] for e in s["export"]], "llrrrrl"),
    ]
    lines += _ood_lines(s.get("ood"))
    eng = s["engine"]
    if eng.get("built"):
        lines += ["", f"TensorRT engine: built, `{eng.get('path')}`."]
    else:
        lines += ["", f"TensorRT engine: not built: {eng.get('reason') or eng.get('error')}."]
        if eng.get("command"):
            lines += ["", f"Build it on the target with `{eng['command']}`."]
    lines += ["", "## Speed (compute only, this machine)", "", pipe_table(
        ["artefact", "batch", "p50 ms", "images/s", "status"],
        [[r["artefact"], r["batch"], f"{r['p50_ms']:.2f}", f"{r['images_per_s']:.1f}", r["status"]]
         if "batch" in r else [r["artefact"], "–", "–", "–", f"{r['status']}: {r.get('reason')}"]
         for r in s["bench"]["rows"]], "lrrrl")]
    lines += ["", "## Files", "",
              f"- data: `{s['data']['root']}` (answer key `{s['data']['answers']}`)",
              f"- checkpoint: `{s['training']['checkpoint']}`",
              *[f"- {e['precision']} ONNX: `{e['file']}`" for e in s["export"]],
              f"- predictions: `{t['predictions']}`",
              f"- bench: `{s['bench']['md']}`, `{s['bench']['json']}`, `{s['bench']['plot']}`", "",
              "Step times (s): " + ", ".join(f"{k} {v}" for k, v in s["seconds"].items())
              + f"; total {s['total_seconds']} s."]
    return "\n".join(lines) + "\n"
