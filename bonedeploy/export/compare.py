"""``bonedeploy compare REFERENCE CANDIDATE``: where two artefacts of one model part ways.

Both run on the same images (the parity set's rule: ``--data``, else a ``.pt``'s validation split,
else synthetic radiographs) twice:

1. through their ordinary backends, as deployed (the gate's runtimes: onnxruntime CPU, OpenVINO
   CPU, PyTorch CPU, TensorRT where it runs): the decisions at the reference card's operating
   point and every image whose decision flips;
2. with every paired layer's tensor exposed (``export.taps``): accumulated and local error per
   layer (``eval.layerwise``), and for each flipped image the layer where its error grew most.

Layers are paired through the module map the export recorded in the model card (``layermap``):
the same module name on a ``.pt``, the same fp32 tensor in every graph derived from it. Without a
map, graphs are paired by the reference graph's tensors (quantizers keep names). A layer that
cannot be found on one side is listed with the reason.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

from bonedeploy.backends.torch import DEVICES
from bonedeploy.errors import ConfigError
from bonedeploy.eval import layerwise
from bonedeploy.eval.parity import ParitySet
from bonedeploy.export.taps import Layer, Tap, Tapper, tapper_for

Log = Callable[[str], None]
REPORT_NAME = "compare.json"
PLOT_NAME = "layers.png"
FORMAT = "bonedeploy.compare/1"
TAP_NOTE = ("layer tensors: ONNX on onnxruntime CPU with graph optimisations off (as qdq_loss_debug); "
            "decisions: each artefact on its deployed backend")


@dataclass
class CompareConfig:
    reference: Path
    candidate: Path
    data: Path | None = None  # image-folder tree; default: the .pt's validation split, else synthetic
    out: Path | None = None  # default: <candidate's folder>/compare-<candidate name>
    parity_n: int | None = None
    tolerance_db: float = layerwise.DEFAULT_TOLERANCE_DB
    batch: int = 8
    plot: bool = True
    # where a .pt runs: the CPU, as export's gate runs its reference; cuda (or auto) on a GPU host
    device: str = "cpu"

    def __post_init__(self) -> None:
        self.reference, self.candidate = Path(self.reference), Path(self.candidate)
        if self.device not in DEVICES:
            raise ConfigError(f"--device {self.device!r}; valid: {', '.join(DEVICES)}")
        if not math.isfinite(float(self.tolerance_db)):
            raise ConfigError(f"--tolerance {self.tolerance_db}: must be a finite number of dB")
        if int(self.batch) < 1:
            raise ConfigError(f"--batch {self.batch}: must be >= 1")

    @property
    def out_dir(self) -> Path:
        if self.out is not None:
            return Path(self.out)
        return self.candidate.resolve().parent / f"compare-{self.candidate.name.removesuffix(self.candidate.suffix)}"


@dataclass
class Side:
    """One artefact: its loaded backend, card, tapper and (for a .pt) checkpoint dict."""

    path: Path
    backend: Any
    tapper: Tapper | None
    ckpt: dict[str, Any] | None = None

    @property
    def card(self):
        return self.backend.card


def open_side(path: Path, device: str = "cpu") -> Side:
    """Load ``path`` on its deployed CPU backend, a ``.pt`` on ``device`` (it keeps its checkpoint
    for the split)."""
    from bonedeploy.backends.base import open_backend
    from bonedeploy.errors import ArtefactError
    from bonedeploy.util.fs import require_file

    suffix = path.suffix.lower()
    if suffix in (".pt", ".pth"):
        return _torch_side(path, device)
    require_file(path, ArtefactError)
    options = {".onnx": ("onnxruntime", {"provider": "cpu"}), ".xml": ("openvino", {"cache": False})}
    name, opts = options.get(suffix, (None, {}))
    backend = open_backend(path, name, **opts).load()
    return Side(path, backend, tapper_for(path, backend))


def _torch_side(path: Path, device: str = "cpu") -> Side:
    from bonedeploy.artefacts.checkpoint import card_from_checkpoint, load_checkpoint, model_from_checkpoint
    from bonedeploy.backends.torch import TorchBackend

    ckpt = load_checkpoint(path)
    model = model_from_checkpoint(ckpt, str(path))
    ckpt.pop("state_dict", None)  # the module holds the weights now
    backend = TorchBackend.from_module(model, card_from_checkpoint(ckpt, str(path)), path,
                                       device=device, precision="fp32").load()
    return Side(path, backend, tapper_for(path, backend), ckpt)


def plan_layers(ref: Side, cand: Side) -> tuple[list[Layer], str]:
    """The layers to compare, in network order, and where the list came from."""
    from bonedeploy.export.layermap import CARD_KEY

    for side in (ref, cand):
        entries = (side.card.extra or {}).get(CARD_KEY) or []
        if entries:
            return [Layer(e["module"], e["type"], e["tensor"]) for e in entries], f"module map in {side.path.name}"
    for side in (ref, cand):
        found = side.tapper.graph_layers() if side.tapper else []
        if found:
            return found, f"graph of {side.path.name} (no module map recorded)"
    return [], "no layer list: neither artefact records a module map nor exposes a graph"


def pair_layers(layers: list[Layer], ref: Side, cand: Side) -> tuple[list[tuple[Layer, Tap, Tap]], list[dict]]:
    paired, unpaired = [], []
    for layer in layers:
        where = [_locate(s, layer) for s in (ref, cand)]
        reasons = [w for w in where if isinstance(w, str)]
        if reasons:
            unpaired.append({"layer": layer.name, "kind": layer.kind, "tensor": layer.tensor,
                             "reason": "; ".join(reasons)})
        else:
            paired.append((layer, where[0], where[1]))
    return paired, unpaired


def _locate(side: Side, layer: Layer) -> Tap | str:
    if side.tapper is None:
        return (f"{side.path.name} exposes only its outputs on its runtime (a built TensorRT engine "
                "keeps no intermediate tensors; compare the ONNX file it was built from)")
    return side.tapper.locate(layer)


def run_compare(config: CompareConfig, log: Log | None = None) -> dict[str, Any]:
    """Compare, write ``compare.json`` (+ ``layers.png``) in ``config.out_dir``; returns the report."""
    from bonedeploy.eval.parity import select_parity_set

    log = log or (lambda _m: None)
    ref = open_side(config.reference, config.device)
    cand = open_side(config.candidate, config.device)
    try:
        _check_same_model(ref, cand)
        ckpt = ref.ckpt or cand.ckpt
        log("preparing the images ...")
        images = select_parity_set(ckpt=ckpt, data=config.data, spec=ref.card.preprocess, n=config.parity_n,
                                   classes=ref.card.classes)
        log(f"running both artefacts as deployed on {len(images)} images ...")
        decisions, deployed = _decisions(ref, cand, images)
        layers, source = plan_layers(ref, cand)
        paired, unpaired = pair_layers(layers, ref, cand)
        log(f"running {len(paired)} paired layers with their tensors exposed ...")
        errors, paired = _layer_errors(ref, cand, paired, unpaired, images, config.batch, deployed)
    finally:
        for s in (ref, cand):
            if s.tapper:
                s.tapper.close()
            s.backend.close()
    report = _report(config, ref, cand, images, source, paired, unpaired, errors, decisions)
    _write(config, report, log)
    return report


def _check_same_model(ref: Side, cand: Side) -> None:
    a, b = ref.card, cand.card
    if a.preprocess.input_shape != b.preprocess.input_shape or tuple(a.classes) != tuple(b.classes):
        raise ConfigError(f"{ref.path.name} ({a.model}, input {a.preprocess.input_shape}, classes "
                          f"{list(a.classes)}) and {cand.path.name} ({b.model}, input {b.preprocess.input_shape}, "
                          f"classes {list(b.classes)}) are not artefacts of the same model")


def _decisions(ref: Side, cand: Side, images: ParitySet) -> Any:
    from bonedeploy.eval import parity
    from bonedeploy.eval.decision import rule_for

    ref_logits = parity.backend_logits(ref.backend, images)
    cand_logits = parity.backend_logits(cand.backend, images)
    res = parity.compare(ref_logits, cand_logits, images.paths, ref.card.classes, labels=images.labels,
                         decision=rule_for(ref.card))
    return res, (ref_logits, cand_logits)


def _layer_errors(ref: Side, cand: Side, paired, unpaired, images: ParitySet, batch: int, deployed):
    if not paired:
        return layerwise.LayerErrors([]), paired
    if any(s.tapper.isolated for s in (ref, cand)):
        return _layer_errors_one_by_one(ref, cand, paired, unpaired, images, batch, deployed)
    for side, k in ((ref, 1), (cand, 2)):
        side.tapper.open([p[k] for p in paired])
    errors = None
    for i in range(0, len(images), batch):
        x = images.x[i:i + batch]
        r_out, c_out = ref.tapper.run(x), cand.tapper.run(x)
        if errors is None:  # shapes are known after the first batch
            paired = _drop_mismatched(paired, unpaired, r_out, c_out)
            errors = layerwise.LayerErrors([p[0].name for p in paired])
        r = {lay.name: r_out[rt.value] for lay, rt, _ in paired}
        c = {lay.name: c_out[ct.value] for lay, _, ct in paired}
        errors.add(r, c, _local_pairs(paired, r, c_out))
    return errors, paired


def _layer_errors_one_by_one(ref: Side, cand: Side, paired, unpaired, images: ParitySet, batch: int, deployed):
    """One layer per compiled model (OpenVINO: several added outputs change what it computes);
    a layer whose probe moves the artefact's own logits is not compared (the reason is listed)."""
    kept, per_layer = [], []
    for lay, rt, ct in paired:
        ref.tapper.open([rt])
        cand.tapper.open([ct])
        outs = []
        for i in range(0, len(images), batch):
            x = images.x[i:i + batch]
            outs.append((ref.tapper.run(x), cand.tapper.run(x)))
            if i == 0:
                why = _probe_moved(outs[0], deployed, len(x), ref, cand) or _shape_mismatch(rt, ct, *outs[0])
                if why:
                    unpaired.append({"layer": lay.name, "kind": lay.kind, "tensor": lay.tensor, "reason": why})
                    break
        else:
            kept.append((lay, rt, ct))
            per_layer.append(outs)
    errors = layerwise.LayerErrors([p[0].name for p in kept])
    for (lay, rt, ct), outs in zip(kept, per_layer):
        for r_out, c_out in outs:
            r = {lay.name: r_out[rt.value]}
            local = _local_pairs([(lay, rt, ct)], r, c_out).get(lay.name)
            errors.add_layer(lay.name, r[lay.name], c_out[ct.value], local)
    return errors, kept


PROBE_TOLERANCE = 0.01  # of the largest deployed logit: how far a probe may move the outputs


def _probe_moved(first, deployed, n: int, ref: Side, cand: Side) -> str | None:
    for side, out, logits in ((ref, first[0], deployed[0]), (cand, first[1], deployed[1])):
        got = out.get(side.tapper.output_name) if side.tapper.isolated else None
        if got is None:
            continue
        want = logits[:n]
        shift = float(np.abs(np.asarray(got, np.float64) - want).max())
        if shift > PROBE_TOLERANCE * max(1e-6, float(np.abs(want).max())):
            return (f"exposing this tensor changes what {side.path.name} computes on its runtime "
                    f"(its logits move by {shift:.3g}): not comparable there")
    return None


def _shape_mismatch(rt: Tap, ct: Tap, r_out, c_out) -> str | None:
    a, b = r_out[rt.value].shape, c_out[ct.value].shape
    return None if a == b else f"shapes differ: {list(a)} vs {list(b)}"


def _drop_mismatched(paired, unpaired, r_out, c_out):
    keep = []
    for lay, rt, ct in paired:
        why = _shape_mismatch(rt, ct, r_out, c_out)
        if why:
            unpaired.append({"layer": lay.name, "kind": lay.kind, "tensor": lay.tensor, "reason": why})
        else:
            keep.append((lay, rt, ct))
    return keep


def _local_pairs(paired, ref_values: dict[str, np.ndarray], c_out: dict[str, np.ndarray]):
    """The candidate's own rounding of each layer: QDQ before/after, or float16 storage."""
    local = {}
    for lay, _, ct in paired:
        if ct.before is not None and ct.before in c_out:
            local[lay.name] = (c_out[ct.before], c_out[ct.value], layerwise.LOCAL_QDQ)
        elif c_out[ct.value].dtype == np.float16:
            r = ref_values[lay.name]
            local[lay.name] = (r, layerwise.fp16_rounding(r), layerwise.LOCAL_FP16)
    return local


def _report(config, ref: Side, cand: Side, images: ParitySet, source: str, paired, unpaired,
            errors, decisions) -> dict[str, Any]:
    rows = errors.rows()
    for row, (lay, rt, ct) in zip(rows, paired):
        row.update(kind=lay.kind, tensor=lay.tensor, candidate_tensor=ct.value)
    names = [r["layer"] for r in rows]
    nsr = errors.image_nsr()
    return _clean({
        "format": FORMAT,
        "reference": _describe(ref), "candidate": _describe(cand),
        "images": images.describe(), "tolerance_db": float(config.tolerance_db),
        "layers_from": source, "taps": TAP_NOTE,
        "layers": rows, "unpaired": unpaired,
        "first_crossing": layerwise.first_crossing(rows, config.tolerance_db),
        "decisions": _decision_summary(decisions),
        "flips": _flips(decisions, nsr, names),
    })


def _describe(side: Side) -> dict[str, Any]:
    return {"path": str(side.path), "precision": side.card.precision, "model": side.card.model,
            "runs_on": side.backend.describe().get("backend")}


def _decision_summary(res) -> dict[str, Any]:
    return {"rule": (res.decision or {}).get("rule"), "n": res.n, "agreement": res.op_agreement,
            "flips": len(res.op_flips), "missed_positives": res.op_missed_positives,
            "max_abs_dprob": res.max_abs_dprob, "mean_abs_dprob": res.mean_abs_dprob}


def _flips(res, nsr: np.ndarray, names: list[str]) -> list[dict[str, Any]]:
    t = (res.decision or {}).get("threshold")
    t = 0.5 if t is None and len(res.classes) == 2 else t
    out = []
    for f in res.op_flips:
        i = f["index"]
        out.append({**f, "threshold": t,
                    "ref_distance": None if t is None else f["ref_prob"] - t,
                    "cand_distance": None if t is None else f["cand_prob"] - t,
                    "diverges_at": layerwise.divergence(nsr[i], names) if len(names) and i < len(nsr) else None})
    return out


def _clean(v: Any) -> Any:
    """JSON has no inf/NaN: -inf SQNR (an overflow) becomes the string "-inf"."""
    if isinstance(v, float) and not math.isfinite(v):
        return "-inf" if v < 0 else ("inf" if v > 0 else "nan")
    if isinstance(v, dict):
        return {k: _clean(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_clean(x) for x in v]
    return v


def _write(config: CompareConfig, report: dict[str, Any], log: Log) -> None:
    from bonedeploy.util.fs import write_json

    out = config.out_dir
    out.mkdir(parents=True, exist_ok=True)
    report["report"] = str(out / REPORT_NAME)
    report["plot"] = None
    if config.plot and report["layers"]:
        from bonedeploy.export.compare_plot import plot_layers

        plot = plot_layers(report, out / PLOT_NAME)  # None without matplotlib
        report["plot"] = str(plot) if plot else None
    write_json(out / REPORT_NAME, report)
    log(f"wrote {out / REPORT_NAME}")
