"""Precision you can trust: int8 flips before and after export's mixed-precision repair, on the
demo model and on the same model with a planted quantisation-hostile layer.

For each model: ``bonedeploy export`` (fp32, fp16, int8; no TensorRT) with ``--repair off`` and
with the default repair, timed; the parity-set figures from each export.json; decision flips
against fp32 on a held-out labelled set (the demo's test folder and answer key); onnxruntime CPU
throughput at batch 8 of fp32, plain int8 and repaired int8 (best of interleaved rounds); every
int8 calibration recipe (MinMax / Entropy / Percentile x per-channel / per-tensor weights) without
float layers, gated on the parity set (which default wins).

The planted model is the demo checkpoint with one channel of AlexNet's first convolution
multiplied by ``--factor`` (weights and bias) and its BatchNorm's running mean and variance
scaled to undo it (mean x f, var x f^2 with eps kept): fp32 decisions are unchanged, but that
channel's range sets the int8 scale of conv1 -> ReLU -> MaxPool and the other 95 channels round
to zero. Deterministic: no randomness is involved.

    bonedeploy demo --out DEMO                        # or any run folder with best.pt
    python benchmarks/precision.py --run-dir DEMO/run --test DEMO/data/test --answers DEMO/data/test_answers.csv
"""

from __future__ import annotations

import argparse
import csv
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import RESULTS, check, script_command, targets_markdown  # noqa: E402

CONV, BN = 0, 3  # AlexNet: features 0 (Conv2d 1->96) ... 3 (BatchNorm2d after the pool)


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--run-dir", type=Path, required=True, help="A run folder with best.pt (e.g. DEMO/run).")
    p.add_argument("--test", type=Path, help="Held-out images (flat folder), e.g. DEMO/data/test.")
    p.add_argument("--answers", type=Path, help="Their labels: CSV path,label (DEMO/data/test_answers.csv).")
    p.add_argument("--work", type=Path, default=Path.home() / ".cache/bonedeploy/precision")
    p.add_argument("--factor", type=float, default=1000.0, help="Range of the planted channel.")
    p.add_argument("--channel", type=int, default=0)
    p.add_argument("--duration", type=float, default=3.0, help="Seconds timed per file and round.")
    p.add_argument("--no-recipes", action="store_true", help="Skip the calibration-recipe table.")
    p.add_argument("--out", type=Path, default=RESULTS)
    return p.parse_args()


def plant(src: Path, dst: Path, channel: int, factor: float) -> Path:
    """The planted checkpoint (see the module docstring)."""
    import torch

    from bonedeploy.artefacts.checkpoint import load_checkpoint, save_checkpoint

    ckpt = load_checkpoint(src)
    sd = ckpt["state_dict"]
    with torch.no_grad():
        for key in (f"{CONV}.weight", f"{CONV}.bias"):
            sd[key][channel] *= factor
        eps = 1e-5  # nn.BatchNorm2d's default, as AlexNet builds it
        sd[f"{BN}.running_mean"][channel] *= factor
        sd[f"{BN}.running_var"][channel] = factor ** 2 * (sd[f"{BN}.running_var"][channel] + eps) - eps
    dst.parent.mkdir(parents=True, exist_ok=True)
    return save_checkpoint(dst, ckpt)


def export(ckpt: Path, out: Path, repair: bool) -> tuple[dict[str, Any], float]:
    import json

    from bonedeploy.export.from_checkpoint import run_export
    from bonedeploy.export.repair import RepairConfig
    from bonedeploy.export.results import ExportConfig

    cfg = ExportConfig(ckpt, out=out, precisions=("fp32", "fp16", "int8"), trt=False,
                       **({} if repair else {"repair": RepairConfig(precisions=())}))
    t0 = time.perf_counter()
    res = run_export(cfg, log=lambda m: print(f"    {m}", flush=True))
    return json.loads(res.report.read_text()), time.perf_counter() - t0


def int8_of(report: dict[str, Any]) -> dict[str, Any]:
    return next(f for f in report["files"] if f["precision"] == "int8")


def held_out(test: Path | None, answers: Path | None, spec, classes):
    if test is None or answers is None:
        return None
    from bonedeploy.data.decode import decode_dataset
    from bonedeploy.eval.parity import ParitySet

    with answers.open() as fh:
        rows = [(Path(r["path"]), classes.index(r["label"])) for r in csv.DictReader(fh)]
    ds = decode_dataset(test, rows, spec)
    return ParitySet(ds.x, ds.y, [str(p) for p in ds.paths], "data folder", str(test))


def flips(ref_path: Path, cand_path: Path, images, card) -> dict[str, Any]:
    from bonedeploy.eval import parity
    from bonedeploy.eval.decision import rule_for
    from bonedeploy.export import gate

    ref, cand = gate.onnx_cpu_logits(ref_path, images), gate.onnx_cpu_logits(cand_path, images)
    r = parity.compare(ref, cand, images.paths, card.classes, labels=images.labels, decision=rule_for(card))
    missed = [f for f in r.op_flips if f["ref_class"] == "Fractured" and f["cand_class"] != "Fractured"]
    return {"n": r.n, "flips": len(r.op_flips), "positive_to_negative": len(missed),
            "agreement": r.op_agreement, "max_abs_dprob": r.max_abs_dprob}


def throughput(paths: dict[str, Path], x: np.ndarray, seconds: float) -> dict[str, Any]:
    """Plain int8 against repaired int8, then fp32 against plain int8 (export.mixed's timing:
    interleaved rounds, best kept). Files with the same sha256 are one file: ratio 1 by identity."""
    from bonedeploy.export.mixed import measure_throughput
    from bonedeploy.export.repair import RepairConfig
    from bonedeploy.util.fs import sha256_file

    cfg = RepairConfig(throughput_s=seconds, throughput_rounds=3)
    identical = sha256_file(paths["int8"]) == sha256_file(paths["int8_repaired"])
    out: dict[str, Any] = {"identical_int8": identical}
    if not identical:
        d = measure_throughput({"unrepaired": paths["int8"], "repaired": paths["int8_repaired"]}, x, cfg)
        out["int8"], out["int8_repaired"] = d["images_per_s"]["unrepaired"], d["images_per_s"]["repaired"]
    d = measure_throughput({"unrepaired": paths["int8"], "repaired": paths["fp32"]}, x, cfg)
    out["fp32"] = d["images_per_s"]["repaired"]
    out.setdefault("int8", d["images_per_s"]["unrepaired"])
    out.setdefault("int8_repaired", out["int8"])
    out["ratio"] = 1.0 if identical else out["int8_repaired"] / out["int8"]
    return out


def recipes(fp32: Path, ckpt: Path, report: dict[str, Any], work: Path) -> list[dict[str, Any]]:
    """Every calibration recipe without float layers, gated on the export's parity set."""
    from bonedeploy.artefacts.checkpoint import load_checkpoint
    from bonedeploy.eval.decision import rule_for
    from bonedeploy.eval.parity import GATES, select_parity_set
    from bonedeploy.export import gate, precision as prec
    from bonedeploy.export import onnx as ox
    from bonedeploy.export.mixed import attempt_of
    from bonedeploy.export.results import Reference

    ck = load_checkpoint(ckpt)
    ck.pop("state_dict", None)
    import onnx

    card = ox.read_card(onnx.load(str(fp32), load_external_data=False))
    calib = prec.calibration_set(ck, None, card.preprocess)
    ps = select_parity_set(ckpt=ck, spec=card.preprocess, classes=card.classes)
    ref = Reference(ps, gate.onnx_cpu_logits(fp32, ps), "model.onnx on onnxruntime CPU")
    work.mkdir(parents=True, exist_ok=True)
    builder = prec.Int8Builder(fp32, card, calib, work)
    rows = []
    for method in prec.CALIBRATION_METHODS:
        for per_channel in (True, False):
            opts = prec.QuantOptions(method, per_channel)
            t0 = time.perf_counter()
            path = ox.save_onnx(builder.build(opts), work / "recipe.onnx")
            f = gate.gate_file(path, "onnx", "int8", ref, gate.onnx_cpu_logits(path, ps), card.classes, GATES,
                               decision=rule_for(card))
            a = attempt_of(opts.label(), opts.describe(), f, time.perf_counter() - t0)
            rows.append(a.to_dict())
            print(f"    {a.label}: {'pass' if a.passed else 'fail'} agreement {a.top1_agreement:.1%}", flush=True)
    return rows


def measure_model(name: str, ckpt: Path, args, test_images) -> dict[str, Any]:
    work = args.work / name
    print(f"[{name}] export --repair off", flush=True)
    off, t_off = export(ckpt, work / "off", repair=False)
    print(f"[{name}] export (default repair)", flush=True)
    on, t_on = export(ckpt, work / "on", repair=True)
    i_off, i_on = int8_of(off), int8_of(on)
    repair_s = (i_on.get("repair") or {}).get("seconds") or 0.0
    # The same export with and without its repair: a shared machine's load changes between two
    # exports minutes apart more than the repair costs, so the two-run ratio is kept beside it.
    times = {"repair_off": t_off, "repair_on": t_on, "repair_s": repair_s,
             "ratio_same_run": t_on / (t_on - repair_s), "ratio_two_runs": t_on / t_off}
    d: dict[str, Any] = {"checkpoint": str(ckpt), "export_s": times,
                         "parity_set": off["parity_inputs"],
                         "parity": {"before": _parity(i_off), "after": _parity(i_on)},
                         "repair": i_on.get("repair"), "passed": {"before": i_off["passed"], "after": i_on["passed"]}}
    from bonedeploy.export import onnx as ox
    import onnx

    card = ox.read_card(onnx.load(str(work / "on" / "model.onnx"), load_external_data=False))
    d["recipe"] = ox.read_card(onnx.load(str(work / "on" / "model.int8.onnx"))).extra.get("quantization")
    if test_images is not None:
        print(f"[{name}] held-out flips", flush=True)
        d["held_out"] = {"before": flips(work / "on" / "model.onnx", work / "off" / "model.int8.onnx", test_images, card),
                         "after": flips(work / "on" / "model.onnx", work / "on" / "model.int8.onnx", test_images, card)}
    print(f"[{name}] throughput at batch 8", flush=True)
    x = (test_images.x if test_images is not None else np.zeros((8, *card.preprocess.input_shape), np.float32))
    d["images_per_s"] = throughput({"fp32": work / "on" / "model.onnx", "int8": work / "off" / "model.int8.onnx",
                                    "int8_repaired": work / "on" / "model.int8.onnx"}, x, args.duration)
    if not args.no_recipes:
        print(f"[{name}] calibration recipes", flush=True)
        d["recipes"] = recipes(work / "on" / "model.onnx", ckpt, off, work / "recipes")
    return d


def _parity(f: dict[str, Any]) -> dict[str, Any]:
    p = f["parity"]
    missed = [x for x in p["op_flips"] if x["ref_class"] == "Fractured" and x["cand_class"] != "Fractured"]
    return {"n": p["n"], "agreement": p["top1_agreement"], "op_agreement": p["op_agreement"],
            "flips": len(p["op_flips"]), "positive_to_negative": len(missed), "max_abs_dprob": p["max_abs_dprob"],
            "failures": f["failures"]}


def targets(models: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    out = []
    for name, d in models.items():
        after = d["parity"]["after"]
        out.append(check(f"{name}: positive->negative flips after repair (parity set)", after["positive_to_negative"], "<=", 0))
        out.append(check(f"{name}: agreement after repair (parity set)", after["op_agreement"], ">=", 0.995))
        out.append(check(f"{name}: int8 throughput repaired / plain, batch 8", d["images_per_s"]["ratio"], ">=", 0.85))
        out.append(check(f"{name}: export time with repair / without (same run)", d["export_s"]["ratio_same_run"],
                         "<=", 2.0))
    return out


def markdown(d: dict[str, Any]) -> str:
    m = d["machine"]
    lines = [f"# Precision you can trust: int8 repair ({m['cpu']}, {m['cores']} cores)", "",
             f"`{d['command']}`", "", f"onnxruntime {d['versions'].get('onnxruntime')}; load average "
             f"before the run {d['load_before']}; {d['created']}", "",
             "| model | parity flips before → after (pos→neg) | agreement after | held-out flips before → after "
             "| kept float | calibration | int8 img/s plain / repaired / fp32 (batch 8) | export s: off / on (repair) |",
             "| --- | --- | ---: | --- | --- | --- | --- | --- |"]
    for name, x in d["models"].items():
        b, a = x["parity"]["before"], x["parity"]["after"]
        h = x.get("held_out") or {}
        held = (f"{h['before']['flips']} ({h['before']['positive_to_negative']}) → {h['after']['flips']} "
                f"({h['after']['positive_to_negative']}) of {h['after']['n']}") if h else "–"
        rep = x.get("repair") or {}
        recipe = x.get("recipe") or {}
        kept = ", ".join(f"{k['node']} ({k.get('layer')})" for k in rep.get("kept_float") or []) or "none"
        ips = x["images_per_s"]
        repaired = "same file" if ips["identical_int8"] else f"{ips['int8_repaired']:.1f}"
        lines.append(
            f"| {name} | {b['flips']} ({b['positive_to_negative']}) → {a['flips']} ({a['positive_to_negative']}) of {a['n']} "
            f"| {a['op_agreement']:.1%} | {held} | {kept} | {recipe.get('calibration_method')} "
            f"{'per-channel' if recipe.get('per_channel') else 'per-tensor'}{'' if rep else ' (no repair)'} "
            f"| {ips['int8']:.1f} / {repaired} / {ips['fp32']:.1f} "
            f"| {x['export_s']['repair_off']:.0f} / {x['export_s']['repair_on']:.0f} ({x['export_s']['repair_s']:.0f}) |")
    lines += ["", targets_markdown(d["targets"]),
              "Export time with repair / without, measured as two separate exports minutes apart (the "
              "machine's load moves it more than the repair does): "
              + ", ".join(f"{n} {x['export_s']['ratio_two_runs']:.2f}" for n, x in d["models"].items()) + ".", ""]
    for name, x in d["models"].items():
        rep = x.get("repair")
        if rep:
            lines += [f"## {name}: the repair's search ({rep['status']}, {rep['checks']} check(s), "
                      f"{rep['seconds']:.0f} s{', stopped: ' + rep['stopped'] if rep.get('stopped') else ''})", "",
                      "| candidate | gate | agreement | decision flips | positives missed | s |", "| --- | --- | ---: | ---: | ---: | ---: |"]
            for a in rep["attempts"]:
                lines.append(f"| {a['label']} | {'pass' if a['passed'] else 'fail'} | {a['top1_agreement']:.1%} | "
                             f"{a['op_flips']} | {a['missed_positives'] or 0} | {a['seconds']:.0f} |")
            lines.append("")
        if x.get("recipes"):
            lines += [f"## {name}: calibration recipes without float layers (parity set)", "",
                      "| recipe | gate | agreement | decision flips | mean abs dprob | build+gate s |",
                      "| --- | --- | ---: | ---: | ---: | ---: |"]
            for a in x["recipes"]:
                lines.append(f"| {a['label']} | {'pass' if a['passed'] else 'fail'} | {a['top1_agreement']:.1%} | "
                             f"{a['op_flips']} | {a['mean_abs_dprob']:.2e} | {a['seconds']:.0f} |")
            lines.append("")
    return "\n".join(lines) + "\n"


def main() -> None:
    import os
    from datetime import datetime, timezone

    from bonedeploy.artefacts.checkpoint import card_from_checkpoint, load_checkpoint
    from bonedeploy.util.fs import write_json, write_text
    from bonedeploy.util.machine import library_versions, machine_info, machine_slug

    args = parse_args()
    load = os.getloadavg()
    demo = args.run_dir / "best.pt"
    ck = load_checkpoint(demo)
    card = card_from_checkpoint(ck)
    del ck
    test_images = held_out(args.test, args.answers, card.preprocess, list(card.classes))
    planted = plant(demo, args.work / "planted" / "best.pt", args.channel, args.factor)
    models = {"demo": measure_model("demo", demo, args, test_images),
              "planted": measure_model("planted", planted, args, test_images)}
    machine = machine_info()
    d = {"machine": machine, "command": script_command(), "versions": library_versions(),
         "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
         "load_before": [round(v, 1) for v in load], "factor": args.factor, "channel": args.channel,
         "models": models}
    d["targets"] = targets(models)
    base = args.out / f"precision-{machine_slug(machine)}"
    write_json(base.with_suffix(".json"), d)
    write_text(base.with_suffix(".md"), markdown(d))
    print(f"wrote {base.with_suffix('.md')}, .json")


if __name__ == "__main__":
    main()
