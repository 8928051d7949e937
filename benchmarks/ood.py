#!/usr/bin/env python
"""The out-of-distribution gate on the demo model: what it refuses, what it lets through, and what
it costs.

In-distribution: the demo's held-out test folder (``DEMO/data/test``: never used to fit the gate or
set its threshold). Out of distribution, every image generated here or shipped inside an installed
package, nothing downloaded:

- far from any radiograph (``bonedeploy.data.synth.ood.FAR``): blank/saturated/constant images,
  noise of four kinds, gradients, text pages, patterns; and natural photographs shipped with
  matplotlib (``mpl-data/sample_data``) and scikit-learn (``datasets/images``), as random crops;
- radiograph-like (reported, not promised): a synthetic chest film, inverted / heavily blurred /
  heavily noisy elbows, and the brain MRI slice matplotlib ships (``s1045.ima.gz``), as crops.

Per set and artefact (the checkpoint through the torch backend, the three ONNX files through
onnxruntime's CPU provider): AUROC against the test radiographs, the FPR at 95% TPR, and the share
refused at the stored threshold; and the share of test radiographs refused. The scores the gate
compared at training time (energy, Mahalanobis on power-normalised and on raw pooled features,
k-NN) are fitted here again on the training split, thresholded on the validation split as the
gate is, and scored on the same sets: the losers' figures on the benchmark's data.

Cost: each artefact against the same file with its OOD head cut out (the nodes only
``ood_score`` needs, their initializers, the output; the checkpoint without its OOD entry), so
the trunk, quantised or not, is identical: sizes compared, and int8 batch-8 throughput on
onnxruntime CPU timed for both in interleaved rounds (the median of the per-round ratios: a
shared machine drifts between rounds, not within one).

    python benchmarks/ood.py --demo /path/to/bonedeploy-demo      # ~15 min on 2 cores

Results: ``benchmarks/results/ood-<machine>.md`` and ``.json``.
"""

from __future__ import annotations

import argparse
import gzip
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import RESULTS, check, script_command, targets_markdown, write_report  # noqa: E402

SEED = 18_000  # the fit's probes use 1801, the export gate's 1802
PHOTO_CROPS = 10  # per photograph
TARGET_CAUGHT, TARGET_ID_FLAGGED, TARGET_AUROC = 0.99, 0.03, 0.99
TARGET_SIZE_GROWTH, TARGET_THROUGHPUT_DROP = 0.05, 0.05


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--demo", type=Path, required=True, help="a `bonedeploy demo` output folder")
    p.add_argument("--per-kind", type=int, default=30, help="generated images per set")
    p.add_argument("--rounds", type=int, default=7, help="interleaved throughput rounds")
    p.add_argument("--round-s", type=float, default=4.0, help="seconds per file and round")
    p.add_argument("--skip-cost", action="store_true", help="no size / throughput comparison")
    p.add_argument("--out", type=Path, default=RESULTS)
    return p.parse_args()


# --- the sets ---------------------------------------------------------------------------------
def photographs() -> list[Path]:
    """Photographs that installed packages ship (matplotlib's and scikit-learn's sample images)."""
    found = []
    try:
        import matplotlib

        data = Path(matplotlib.get_data_path()) / "sample_data"
        found += [data / "grace_hopper.jpg", data / "Minduka_Present_Blue_Pack.png"]
    except ImportError:
        pass
    try:
        import sklearn

        found += sorted((Path(sklearn.__file__).parent / "datasets" / "images").glob("*.jpg"))
    except ImportError:
        pass
    return [p for p in found if p.is_file()]


def mri_slice() -> np.ndarray | None:
    """matplotlib's brain MRI (256 x 256, 16-bit big-endian), scaled to [0, 1]."""
    try:
        import matplotlib
    except ImportError:
        return None
    path = Path(matplotlib.get_data_path()) / "sample_data" / "s1045.ima.gz"
    if not path.is_file():
        return None
    a = np.frombuffer(gzip.decompress(path.read_bytes()), ">u2").astype(np.float32).reshape(256, 256)
    return (a - a.min()) / (np.ptp(a) + 1e-9)


def crops(images: list[np.ndarray], n_each: int, size: int, rng: np.random.Generator) -> list[np.ndarray]:
    """Random square crops (30-100% of the short side), resized to ``size``, grey."""
    from PIL import Image

    out = []
    for im in images:
        g = im if im.ndim == 2 else (im[..., :3] @ np.array([0.2989, 0.587, 0.114], np.float32))
        for _ in range(n_each):
            side = int(min(g.shape) * rng.uniform(0.3, 1.0))
            y, x = rng.integers(0, g.shape[0] - side + 1), rng.integers(0, g.shape[1] - side + 1)
            tile = Image.fromarray((g[y:y + side, x:x + side] * 255).astype(np.uint8)).resize((size, size))
            out.append(np.asarray(tile, np.float32) / 255.0)
    return out


def ood_sets(spec, per_kind: int) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """Preprocessed sets by name, and each set's group (far / near)."""
    from bonedeploy.data.imageio import read_image
    from bonedeploy.data.synth.ood import FAR, NEAR, make_images

    rng = np.random.default_rng(SEED)
    sets, group = {}, {}
    for kind in FAR + NEAR:
        sets[kind] = spec.apply_batch(make_images(kind, per_kind, spec.crop_size, seed=SEED))
        group[kind] = "far" if kind in FAR else "near"
    photos = [read_image(p) for p in photographs()]
    photos = [im[..., 0] if im.shape[-1] == 1 else im for im in photos]
    if photos:
        sets["photographs"] = spec.apply_batch(crops(photos, PHOTO_CROPS, spec.crop_size, rng))
        group["photographs"] = "far"
    mri = mri_slice()
    if mri is not None:
        sets["mri-slice"] = spec.apply_batch(crops([mri], per_kind, spec.crop_size, rng))
        group["mri-slice"] = "near"
    return sets, group


# --- scoring ----------------------------------------------------------------------------------
def figures(inside: np.ndarray, outside: np.ndarray, threshold: float) -> dict[str, float]:
    from bonedeploy.eval.ood import auroc, fpr_at_tpr

    return {"n": int(len(outside)), "auroc": auroc(inside, outside), "fpr_at_95tpr": fpr_at_tpr(inside, outside),
            "caught": float(np.mean(~(outside <= threshold)))}


def artefact_scores(path: Path, x: np.ndarray) -> np.ndarray:
    from bonedeploy.backends import open_backend

    options = {"provider": "cpu"} if path.suffix == ".onnx" else {"device": "cpu"}
    with open_backend(path, **options) as b:
        scores = [b.infer_scored(x[i:i + 16])[1] for i in range(0, len(x), 16)]
    if any(s is None for s in scores):
        raise SystemExit(f"{path}: computes no ood_score; re-export it with this bonedeploy")
    return np.concatenate(scores).astype(np.float64)


def methods_compared(model, card, ckpt, test, sets) -> list[dict[str, Any]]:
    """Every candidate fitted on the training split, thresholded on the validation split, scored
    on the benchmark's sets (the gate's own comparison, on other data)."""
    from bonedeploy.eval import ood
    from bonedeploy.eval.parity import select_parity_set
    from bonedeploy.models.ood_spec import DEFAULT_MIN_STD

    layer, _ = ood.feature_layer_of(model, card)
    x_tr, y_tr, _ = ood.training_split(ckpt, card.preprocess, "checkpoint")
    val = select_parity_set(ckpt=ckpt, spec=card.preprocess, classes=card.classes)
    train, v = ood.measure(model, layer, x_tr), ood.measure(model, layer, val.x)
    seen = {"test": ood.measure(model, layer, test), **{k: ood.measure(model, layer, x) for k, x in sets.items()}}
    rows = []
    for method, power in ood.CANDIDATES:
        tensors, info = ood.fit_tensors(method, train.features, y_tr, power)
        score = lambda d: ood.head_scores(method, tensors, power, info.get("k"), d, DEFAULT_MIN_STD)  # noqa: E731
        t = ood.choose_threshold(score(v), card.ood.target_fpr).threshold
        inside = score(seen["test"])
        rows.append({"method": f"{method}-sqrt" if power else method, "threshold": t,
                     "test_flagged": float(np.mean(inside > t)),
                     "sets": {k: figures(inside, score(seen[k]), t) for k in sets}})
    return rows


# --- cost -------------------------------------------------------------------------------------
def without_head(src: Path, dst: Path) -> Path:
    """The same file without its OOD head: the nodes only ``ood_score`` needs, their initializers
    and the output itself (the trunk, quantised or not, is byte for byte the same)."""
    import onnx

    from bonedeploy.export.onnx import ood_nodes

    model = onnx.load(str(src))
    heads = ood_nodes(model.graph)
    keep = [n for n in model.graph.node if n.name not in heads]
    del model.graph.node[:]
    model.graph.node.extend(keep)
    outs = [o for o in model.graph.output if o.name != "ood_score"]
    del model.graph.output[:]
    model.graph.output.extend(outs)
    read = {i for n in model.graph.node for i in n.input}
    inits = [i for i in model.graph.initializer if i.name in read]
    del model.graph.initializer[:]
    model.graph.initializer.extend(inits)
    onnx.save(model, str(dst))
    return dst


def build_pair(run: Path, work: Path) -> dict[str, dict[str, Path]]:
    """Each artefact as exported, and the same without its OOD head (and the checkpoint without
    its OOD entry)."""
    import torch

    from bonedeploy.artefacts.checkpoint import card_from_checkpoint, load_checkpoint
    from bonedeploy.models.ood import CKPT_KEY

    ckpt = load_checkpoint(run / "best.pt")
    plain = {k: v for k, v in ckpt.items() if k != CKPT_KEY}
    plain["card"] = card_from_checkpoint(ckpt).with_(ood=None).to_dict()
    torch.save(plain, work / "plain.pt")
    out = {"with": {"checkpoint": run / "best.pt"}, "without": {"checkpoint": work / "plain.pt"}}
    for key, name in (("fp32", "model.onnx"), ("fp16", "model.fp16.onnx"), ("int8", "model.int8.onnx")):
        out["with"][key] = run / name
        out["without"][key] = without_head(run / name, work / name)
    return out


def throughput(paths: dict[str, Path], x: np.ndarray, rounds: int, seconds: float) -> dict[str, Any]:
    from bonedeploy.backends import open_backend
    from bonedeploy.bench.timing import measure

    backends = {k: open_backend(p, "onnxruntime", provider="cpu").load() for k, p in paths.items()}
    per: dict[str, list[float]] = {k: [] for k in paths}
    try:
        for r in range(rounds):
            order = list(backends) if r % 2 == 0 else list(reversed(backends))
            for k in order:
                b = backends[k]
                per[k].append(measure(lambda b=b: b.infer(x), len(x), warmup_s=0.5, duration_s=seconds,
                                      min_iterations=3).images_per_s)
    finally:
        for b in backends.values():
            b.close()
    ratios = [w / o for w, o in zip(per["with"], per["without"])]
    return {"batch": len(x), "rounds": rounds, "seconds_per_round": seconds, "images_per_s": per,
            "ratio_per_round": ratios, "ratio_median": float(np.median(ratios))}


# --- report -----------------------------------------------------------------------------------
def markdown(d: dict[str, Any]) -> str:
    from bonedeploy.util.machine import machine_slug

    m, g = d["machine"], d["gate"]
    lines = [f"# ood on {machine_slug(m)}", "", f"`{d['command']}`", "",
             f"CPU: {m['cpu']} ({m['cores']} cores); {d['seconds']:.0f} s; load average "
             f"{d['load'][0]:.2f} at the start, {d['load'][1]:.2f} at the end (other work shared the "
             f"machine); git {m['git_commit']}.", "",
             f"Demo model `{d['model']}` ({d['demo']}). Gate in its card: {g['describe']}.", "",
             f"In distribution: {d['test_n']} held-out test radiographs. Out of distribution: "
             f"{d['per_kind']} generated images per set (seed {SEED}); photographs: "
             f"{', '.join(d['photographs']) or 'none installed'} ({PHOTO_CROPS} crops each).", "",
             targets_markdown(d["targets"]), "## Per set, every artefact", "",
             "AUROC and FPR at 95% TPR: test radiographs against the set; caught: the share refused at "
             "the stored threshold. Far sets are promised, near sets reported.", "",
             "| set | group | n | artefact | AUROC | FPR@95TPR | caught |", "|---|---|---:|---|---:|---:|---:|"]
    for name, grp in d["groups"].items():
        for art, res in d["artefacts"].items():
            f = res["sets"][name]
            lines.append(f"| {name} | {grp} | {f['n']} | {art} | {f['auroc']:.4f} | {f['fpr_at_95tpr']:.3f} | "
                         f"{f['caught']:.1%} |")
    lines += ["", "| artefact | test radiographs refused |", "|---|---:|"]
    lines += [f"| {a} | {r['test_flagged']:.1%} ({r['test_refused']} of {d['test_n']}) |"
              for a, r in d["artefacts"].items()]
    lines += ["", "## The scores compared (fitted on the training split, thresholded on the validation "
              "split, as the gate is)", "", "Chosen by the gate: " + g["method_label"] + ".", "",
              "| score | test refused | " + " | ".join(d["groups"]) + " |",
              "|---|---:|" + "---:|" * len(d["groups"])]
    for r in d["methods"]:
        lines.append(f"| {r['method']} | {r['test_flagged']:.1%} | " + " | ".join(
            f"{r['sets'][k]['auroc']:.3f} / {r['sets'][k]['caught']:.0%}" for k in d["groups"]) + " |")
    lines += ["", "(cells: AUROC / caught at the score's own threshold)", ""]
    if d.get("cost"):
        c = d["cost"]
        lines += ["## Cost of the OOD head", "", "| artefact | without | with | growth |", "|---|---:|---:|---:|"]
        lines += [f"| {k} | {v['without']:,} B | {v['with']:,} B | {v['growth']:+.3%} |" for k, v in c["sizes"].items()]
        t = c["throughput"]
        lines += ["", f"int8 batch {t['batch']} on onnxruntime CPU, {t['rounds']} interleaved rounds of "
                  f"{t['seconds_per_round']:g} s: with / without = {t['ratio_median']:.3f} (median of rounds; "
                  f"per round {', '.join(f'{r:.3f}' for r in t['ratio_per_round'])}); images/s with "
                  f"{np.median(t['images_per_s']['with']):.1f}, without {np.median(t['images_per_s']['without']):.1f}.", ""]
    return "\n".join(lines) + "\n"


def main() -> int:
    from bonedeploy.artefacts.checkpoint import card_from_checkpoint, load_checkpoint, model_from_checkpoint
    from bonedeploy.data.folders import list_images
    from bonedeploy.data.imageio import read_image
    from bonedeploy.util.machine import machine_info

    args = parse_args()
    t0, load0 = time.perf_counter(), os.getloadavg()[0]
    run = args.demo / "run"
    ckpt = load_checkpoint(run / "best.pt")
    card = card_from_checkpoint(ckpt)
    if card.ood is None:
        raise SystemExit(f"{run / 'best.pt'} has no OOD gate: run a demo with this bonedeploy")
    spec = card.preprocess
    files, _ = list_images([args.demo / "data" / "test"])
    test = spec.apply_batch([read_image(p) for p in files])
    sets, group = ood_sets(spec, args.per_kind)
    print(f"{len(test)} test radiographs; sets: " + ", ".join(f"{k} {len(v)}" for k, v in sets.items()), flush=True)
    artefacts = {"PyTorch fp32 (best.pt)": run / "best.pt", "ONNX fp32": run / "model.onnx",
                 "ONNX fp16": run / "model.fp16.onnx", "ONNX int8": run / "model.int8.onnx"}
    results = {}
    everything = np.concatenate([test, *sets.values()])
    for label, path in artefacts.items():
        print(f"scoring with {label} ...", flush=True)
        s = artefact_scores(path, everything)
        inside, start, per = s[:len(test)], len(test), {}
        for k, x in sets.items():
            per[k] = figures(inside, s[start:start + len(x)], card.ood.threshold)
            start += len(x)
        refused = int(np.sum(~(inside <= card.ood.threshold)))
        results[label] = {"test_flagged": refused / len(test), "test_refused": refused, "sets": per}
    print("the scores compared ...", flush=True)
    methods = methods_compared(model_from_checkpoint(ckpt), card, ckpt, test, sets)
    cost = None
    if not args.skip_cost:
        print("cost: building the artefacts with and without the OOD head ...", flush=True)
        with tempfile.TemporaryDirectory(prefix="bonedeploy-ood-bench-") as tmp:
            pair = build_pair(run, Path(tmp))
            sizes = {k: {"with": pair["with"][k].stat().st_size, "without": pair["without"][k].stat().st_size}
                     for k in ("checkpoint", "fp32", "fp16", "int8")}
            for v in sizes.values():
                v["growth"] = v["with"] / v["without"] - 1
            print("cost: int8 batch-8 throughput ...", flush=True)
            x8 = np.ascontiguousarray(test[:8])
            cost = {"sizes": sizes, "throughput": throughput({"with": pair["with"]["int8"],
                                                             "without": pair["without"]["int8"]},
                                                            x8, args.rounds, args.round_s)}
    far = [k for k, g in group.items() if g == "far"]
    checks = []
    for label in ("ONNX int8", "PyTorch fp32 (best.pt)"):
        r = results[label]
        checks.append(check(f"{label}: worst share of a non-radiograph set caught",
                            min(r["sets"][k]["caught"] for k in far), ">=", TARGET_CAUGHT))
        checks.append(check(f"{label}: test radiographs refused", r["test_flagged"], "<=", TARGET_ID_FLAGGED))
        checks.append(check(f"{label}: worst AUROC of a non-radiograph set",
                            min(r["sets"][k]["auroc"] for k in far), ">=", TARGET_AUROC))
    if cost:
        for k, v in cost["sizes"].items():
            checks.append(check(f"size growth, {k}", v["growth"], "<=", TARGET_SIZE_GROWTH))
        checks.append(check("int8 batch-8 throughput drop", 1 - cost["throughput"]["ratio_median"], "<=",
                            TARGET_THROUGHPUT_DROP))
    machine = machine_info()
    chosen = next(c["method"] for c in card.ood.comparison if c.get("chosen"))
    d = {"command": script_command(), "machine": machine, "seconds": time.perf_counter() - t0,
         "load": [load0, os.getloadavg()[0]], "demo": str(args.demo), "model": card.model,
         "gate": {**card.ood.to_dict(), "describe": card.ood.describe(), "method_label": chosen},
         "test_n": len(test), "per_kind": args.per_kind, "photographs": [p.name for p in photographs()],
         "groups": group, "artefacts": results, "methods": methods, "cost": cost, "targets": checks}
    write_report(args.out, "ood", d, markdown(d))
    return 0 if all(c["verdict"] == "PASS" for c in checks) else 1


if __name__ == "__main__":
    raise SystemExit(main())
