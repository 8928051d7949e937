"""Temperature scaling, its figures (NLL, ECE, Brier) and the reliability diagram; and
``calibrate_checkpoint``, the library function behind ``bonedeploy calibrate``.

Temperature scaling (Guo et al., 2017) divides the logits by one scalar T fitted by minimising the
negative log-likelihood on held-out images: it leaves the argmax unchanged and makes the
probabilities mean what they say. T is fitted as log T with L-BFGS-B (scipy), bounded to
[0.05, 20]: on a small split the model separates perfectly, the NLL keeps falling as T -> 0, and an
unbounded fit would return probabilities of exactly 0 and 1.

The temperature and the operating point are fitted on the same images (the checkpoint's
validation split unless ``--data`` names a separate calibration set); the reports say so.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from bonedeploy.errors import CheckpointError, DataError
from bonedeploy.eval.decision import DecisionRule, is_positive, positive_scores
from bonedeploy.artefacts.operating_point import OperatingPoint
from bonedeploy.eval.operating_point import choose_operating_point, validate_target

ECE_BINS = 15
T_BOUNDS = (0.05, 20.0)
REPORT_JSON, REPORT_MD, RELIABILITY_PNG = "calibration.json", "calibration.md", "reliability.png"


def _log_softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(axis=1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=1, keepdims=True))


def nll(logits: np.ndarray, labels: Sequence[int], temperature: float = 1.0) -> float:
    z = np.asarray(logits, dtype=np.float64) / temperature
    y = np.asarray(labels, dtype=int)
    return float(-_log_softmax(z)[np.arange(len(y)), y].mean())


def fit_temperature(logits: np.ndarray, labels: Sequence[int]) -> float:
    """T minimising the NLL of softmax(logits / T), by L-BFGS-B on log T with its exact gradient."""
    from scipy.optimize import minimize

    z = np.asarray(logits, dtype=np.float64)
    y = np.asarray(labels, dtype=int)
    if len(y) == 0:
        raise DataError("no images to fit a temperature on")
    onehot = np.eye(z.shape[1])[y]

    def objective(v: np.ndarray) -> tuple[float, np.ndarray]:
        t = math.exp(float(v[0]))
        ls = _log_softmax(z / t)
        loss = -(ls * onehot).sum(axis=1).mean()
        # d loss / d log t = -(1/t) * mean((p - onehot) . z)
        grad = -((np.exp(ls) - onehot) * z).sum(axis=1).mean() / t
        return float(loss), np.array([grad])

    lo, hi = (math.log(b) for b in T_BOUNDS)
    res = minimize(objective, x0=np.zeros(1), jac=True, method="L-BFGS-B", bounds=[(lo, hi)])
    return float(math.exp(float(res.x[0])))


def expected_calibration_error(probs: np.ndarray, labels: Sequence[int], bins: int = ECE_BINS) -> float:
    """ECE of the top-label confidence: sum over equal-width bins of |accuracy - confidence| x share."""
    probs, y = np.asarray(probs, dtype=np.float64), np.asarray(labels, dtype=int)
    conf, correct = probs.max(axis=1), (probs.argmax(axis=1) == y).astype(float)
    edges = np.linspace(0.0, 1.0, bins + 1)
    idx = np.clip(np.digitize(conf, edges[1:-1], right=True), 0, bins - 1)
    ece = 0.0
    for b in range(bins):
        m = idx == b
        if m.any():
            ece += m.mean() * abs(correct[m].mean() - conf[m].mean())
    return float(ece)


def brier(probs: np.ndarray, labels: Sequence[int]) -> float:
    """Mean over images of sum over classes of (p - onehot)^2 (for two classes, 2x the binary one)."""
    probs, y = np.asarray(probs, dtype=np.float64), np.asarray(labels, dtype=int)
    return float(((probs - np.eye(probs.shape[1])[y]) ** 2).sum(axis=1).mean())


def calibration_figures(logits: np.ndarray, labels: Sequence[int], temperature: float,
                        classes: Sequence[str]) -> dict[str, Any]:
    """NLL, ECE (15 bins) and Brier before (T = 1) and after temperature scaling."""
    out: dict[str, Any] = {"temperature": float(temperature), "n": int(len(labels)), "ece_bins": ECE_BINS}
    for name, t in (("before", 1.0), ("after", float(temperature))):
        p = DecisionRule(tuple(classes), t).probabilities(logits)
        out[name] = {"nll": nll(logits, labels, t), "ece": expected_calibration_error(p, labels),
                     "brier": brier(p, labels)}
    return out


def plot_reliability(logits: np.ndarray, labels: Sequence[int], temperature: float,
                     classes: Sequence[str], path: str | Path, title: str = "") -> Path:
    """Reliability diagram (top-label confidence vs accuracy, 15 bins) before and after scaling,
    with how many images each bin holds."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from bonedeploy.util.fs import atomic_path

    y = np.asarray(labels, dtype=int)
    edges = np.linspace(0, 1, ECE_BINS + 1)
    centres = (edges[:-1] + edges[1:]) / 2
    fig, (ax, axn) = plt.subplots(2, 1, figsize=(5.5, 6.5), sharex=True,
                                  gridspec_kw={"height_ratios": [3, 1]})
    ax.plot([0, 1], [0, 1], ":", color="grey", label="perfect calibration")
    width = 1 / ECE_BINS
    for (name, t), colour, off in ((("before (T = 1)", 1.0), "tab:red", -0.22),
                                   ((f"after (T = {temperature:.2f})", temperature), "tab:blue", 0.22)):
        p = DecisionRule(tuple(classes), t).probabilities(logits)
        conf, correct = p.max(axis=1), (p.argmax(axis=1) == y)
        idx = np.clip(np.digitize(conf, edges[1:-1], right=True), 0, ECE_BINS - 1)
        acc = np.array([correct[idx == b].mean() if (idx == b).any() else np.nan for b in range(ECE_BINS)])
        cnt = np.bincount(idx, minlength=ECE_BINS)
        ece = expected_calibration_error(p, y)
        ax.bar(centres + off * width, np.nan_to_num(acc), width=width * 0.44, color=colour, alpha=0.75,
               label=f"{name}: ECE {ece:.3f}")
        axn.bar(centres + off * width, cnt, width=width * 0.44, color=colour, alpha=0.75)
    ax.set_ylabel("accuracy in bin")
    ax.set_ylim(0, 1.02)
    ax.set_title(title or f"reliability ({len(y)} images, {ECE_BINS} bins)", fontsize=10)
    ax.legend(loc="upper left", fontsize=8)
    axn.set_xlabel("confidence (top-class calibrated probability)")
    axn.set_ylabel("images")
    axn.set_xlim(0, 1)
    fig.tight_layout()
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)
    return path


@dataclass
class DecisionFit:
    """A fitted temperature and operating point, and the figures that justify them."""

    temperature: float
    operating_point: OperatingPoint
    calibration: dict[str, Any]
    logits: np.ndarray = field(repr=False)
    labels: np.ndarray = field(repr=False)


def fit_decision(logits: np.ndarray, labels: Sequence[int], classes: Sequence[str],
                 target: float | None, chosen_on: str, positive_class: str | None = None) -> DecisionFit:
    """Temperature by NLL, then the operating point on the *calibrated* p(positive)."""
    from bonedeploy import POSITIVE_CLASS

    target = validate_target(target)
    classes = tuple(classes)
    positive = positive_class or (POSITIVE_CLASS if POSITIVE_CLASS in classes else classes[0])
    y = np.asarray(labels, dtype=int)
    t = fit_temperature(logits, y)
    rule = DecisionRule(classes, t, positive_class=positive)
    now = datetime.now(timezone.utc).isoformat(timespec="seconds")
    op = choose_operating_point(positive_scores(rule, logits), is_positive(y, rule), positive, target,
                                chosen_on=chosen_on, chosen_at=now)
    cal = calibration_figures(logits, y, t, classes) | {"fitted_on": chosen_on, "fitted_at": now}
    return DecisionFit(t, op, cal, np.asarray(logits), y)


def apply_fit(card: Any, fit: DecisionFit) -> Any:
    """The card with the fit's values; the values it replaces go to the end of its history
    (a card that never had a fit, temperature 1 and no operating point, adds nothing)."""
    history = list(card.history)
    if card.operating_point is not None or card.calibration is not None:
        history.append(card.decision_state() | {"replaced_at": fit.calibration.get("fitted_at")})
    return card.with_(operating_point=fit.operating_point, temperature=fit.temperature,
                      calibration=fit.calibration, history=tuple(history))


def write_calibration_report(folder: str | Path, fit: DecisionFit, classes: Sequence[str],
                             model: str, prefix: str = "") -> dict[str, Path]:
    """``calibration.json``, ``calibration.md`` and ``reliability.png`` in ``folder``."""
    from bonedeploy.util.fs import write_json, write_text

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    paths = {"json": folder / (prefix + REPORT_JSON), "md": folder / (prefix + REPORT_MD),
             "png": folder / (prefix + RELIABILITY_PNG)}
    plot_reliability(fit.logits, fit.labels, fit.temperature, classes, paths["png"],
                     title=f"{model}: reliability on {len(fit.labels)} images")
    doc = {"model": model, "temperature": fit.temperature, "calibration": fit.calibration,
           "operating_point": fit.operating_point.to_dict(), "same_split": True,
           "note": same_split_note(fit)}
    write_json(paths["json"], doc)
    write_text(paths["md"], render_markdown(fit, model, paths["png"].name))
    return paths


def same_split_note(fit: DecisionFit) -> str:
    return (f"The temperature and the operating point were both fitted on the same {fit.operating_point.n} "
            f"images ({fit.operating_point.chosen_on}): their figures are optimistic for new images. "
            "Pass --data DIR to `bonedeploy calibrate` to fit them on a separate calibration set.")


def render_markdown(fit: DecisionFit, model: str, png_name: str) -> str:
    c, op = fit.calibration, fit.operating_point
    from bonedeploy.ui.markdown import pipe_table

    rows = [[k, f"{c['before'][k]:.4f}", f"{c['after'][k]:.4f}"] for k in ("nll", "ece", "brier")]
    return "\n".join([
        f"# {model}: calibration and operating point", "",
        f"Temperature **T = {fit.temperature:.4f}** (probabilities = softmax(logits / T)), fitted by "
        f"minimising the NLL on {c['n']} images ({c['fitted_on']}).", "",
        pipe_table(["figure", "before (T = 1)", "after"], rows, "lrr"), "",
        f"ECE uses {c['ece_bins']} equal-width bins of the top-class probability; Brier is the "
        "multi-class sum of squared errors.", "",
        f"Operating point: {op.describe()}.", "",
        f"**{same_split_note(fit)}**", "",
        f"![reliability diagram]({png_name})", ""])


# --- bonedeploy calibrate -----------------------------------------------------------------
@dataclass(frozen=True)
class CalibrateConfig:
    checkpoint: Path
    data: Path | None = None  # a labelled image-folder tree instead of the recorded validation split
    target_sensitivity: float | None = None
    out: Path | None = None  # default: rewrite the checkpoint in place (atomically)

    def validate(self) -> None:
        validate_target(self.target_sensitivity)


@dataclass
class CalibrateResult:
    out: Path
    fit: DecisionFit
    reports: dict[str, Path]
    replaced: dict[str, Any] | None  # the decision values now at the end of the card's history


def calibrate_checkpoint(config: CalibrateConfig) -> CalibrateResult:
    """Fit T and the operating point for a checkpoint and write it back (in place or to ``out``)."""
    from bonedeploy.artefacts.checkpoint import (card_from_checkpoint, load_checkpoint,
                                                 model_from_checkpoint, save_checkpoint)

    config.validate()
    src = Path(config.checkpoint)
    ckpt = load_checkpoint(src)
    card = card_from_checkpoint(ckpt, str(src))
    x, labels, where = calibration_inputs(ckpt, config.data, card, src)
    logits = model_logits(model_from_checkpoint(ckpt, str(src)), card, x, src)
    fit = fit_decision(logits, labels, card.classes, config.target_sensitivity, where)
    new_card = apply_fit(card, fit)
    out = Path(config.out) if config.out is not None else src
    save_checkpoint(out, {**ckpt, "card": new_card.to_dict()})
    reports = write_calibration_report(out.parent, fit, card.classes, card.model, prefix="")
    replaced = new_card.history[-1] if len(new_card.history) > len(card.history) else None
    return CalibrateResult(out, fit, reports, replaced)


def calibration_inputs(ckpt: dict[str, Any], data: Path | None, card: Any, src: Path):
    """Labelled images to fit on: ``data`` or the checkpoint's validation split (never synthetic:
    a calibration on made-up images would be worse than none)."""
    from bonedeploy.eval import parity

    if data is None:
        split = ckpt.get("split") or {}
        if not split.get("val"):
            raise CheckpointError(f"{src}: records no validation split; pass --data DIR (a labelled "
                                  "image folder with one sub-folder per class)")
        if not (split.get("root") and Path(split["root"]).is_dir()):
            raise DataError(f"{src}: its validation images were in {split.get('root')!r}, which is not "
                            "here; pass --data DIR")
        where = f"the checkpoint's validation split ({split['root']})"
    else:
        where = f"{data}"
    ps = parity.select_parity_set(ckpt=ckpt, data=data, spec=card.preprocess, classes=card.classes)
    if ps.labels is None or len(ps.labels) == 0:
        raise DataError(f"{data or src}: no labelled images to calibrate on")
    return ps.x, np.asarray(ps.labels, dtype=int), where


def model_logits(model: Any, card: Any, x: np.ndarray, path: str | Path = "checkpoint") -> np.ndarray:
    """fp32 logits on the CPU through the torch backend (as the export reference runs)."""
    from bonedeploy.backends.torch import TorchBackend

    with TorchBackend.from_module(model, card, Path(path), device="cpu", precision="fp32") as backend:
        return np.concatenate([backend.infer(x[i:i + 16]) for i in range(0, len(x), 16)])

