"""Temperature scaling, its figures (NLL, ECE, Brier) and the reliability diagram; and
``calibrate_checkpoint``, the library function behind ``bonedeploy calibrate``.

Temperature scaling (Guo et al., 2017) divides the logits by one scalar T fitted by minimising the
negative log-likelihood on held-out images: it leaves the argmax unchanged and makes the
probabilities mean what they say. T is fitted as log T with L-BFGS-B (scipy), bounded to
[0.05, 20]: on a small split the model separates perfectly, the NLL keeps falling as T -> 0, and an
unbounded fit would return probabilities of exactly 0 and 1.

The temperature and the operating point are fitted on the same images (the checkpoint's
validation split unless ``--data`` names a separate calibration set); the reports say so. Below the
minimum set sizes (``bonedeploy.eval.set_size``) T stays 1 and the operating point unset, with the
reason; ``calibrate`` and a target sensitivity refuse instead, unless forced (the card records it).
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
from bonedeploy.eval.set_size import OPERATING_POINT, TEMPERATURE, SizeVerdict, refuse_small, size_verdicts

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
    """A fitted temperature and operating point, and the figures that justify them. Below its
    minimum set size a value is not fitted (T = 1, ``operating_point`` None) unless forced."""

    temperature: float
    operating_point: OperatingPoint | None
    calibration: dict[str, Any]
    logits: np.ndarray = field(repr=False)
    labels: np.ndarray = field(repr=False)
    verdicts: tuple[SizeVerdict, ...] = ()
    forced: tuple[str, ...] = ()  # values fitted below their minimum (--force)

    @property
    def skipped(self) -> tuple[SizeVerdict, ...]:
        """The verdicts that kept a value from being fitted."""
        return tuple(v for v in self.verdicts if not v.ok and v.fits not in self.forced)

    @property
    def temperature_fitted(self) -> bool:
        return all(v.fits != TEMPERATURE for v in self.skipped)

    def notes(self) -> list[str]:
        """What the console and the reports say about set sizes (nothing when all is well)."""
        unset = "" if self.operating_point is not None else " and no operating point set"
        out = [f"temperature not fitted (T = 1 kept{unset}): {v.reason()}" for v in self.skipped]
        out += [f"{v.fits} fitted below the minimum (--force): {v.reason()}"
                for v in self.verdicts if v.fits in self.forced]
        return out


def positive_of(classes: Sequence[str], positive_class: str | None = None) -> str:
    from bonedeploy import POSITIVE_CLASS

    return positive_class or (POSITIVE_CLASS if POSITIVE_CLASS in classes else classes[0])


def decision_verdicts(labels: Sequence[int], classes: Sequence[str], target: float | None, where: str,
                      positive_class: str | None = None) -> tuple[SizeVerdict, ...]:
    """Is the set large enough for a temperature (and, with a target, an operating point)?"""
    classes = tuple(classes)
    return size_verdicts(labels, classes, positive_of(classes, positive_class), target, where)


def fit_decision(logits: np.ndarray, labels: Sequence[int], classes: Sequence[str],
                 target: float | None, chosen_on: str, positive_class: str | None = None,
                 force: bool = False, way_out: str = "Fit on a larger labelled set") -> DecisionFit:
    """Temperature by NLL, then the operating point on the *calibrated* p(positive).

    Below the temperature's minimum T stays 1 and, without a target, no operating point is set;
    a target on too few positives raises ``DataError`` (``way_out`` says what to do). ``force``
    fits both anyway and records it."""
    target = validate_target(target)
    classes = tuple(classes)
    positive = positive_of(classes, positive_class)
    y = np.asarray(labels, dtype=int)
    verdicts = decision_verdicts(y, classes, target, chosen_on, positive)
    refuse_small([v for v in verdicts if v.fits == OPERATING_POINT], force, way_out)
    forced = tuple(v.fits for v in verdicts if not v.ok) if force else ()
    fit_t = verdicts[0].ok or force
    t = fit_temperature(logits, y) if fit_t else 1.0
    rule = DecisionRule(classes, t, positive_class=positive)
    now = datetime.now(timezone.utc).isoformat(timespec="seconds")
    op = None
    if target is not None or fit_t:
        op = choose_operating_point(positive_scores(rule, logits), is_positive(y, rule), positive, target,
                                    chosen_on=chosen_on, chosen_at=now,
                                    fitted_below_minimum=OPERATING_POINT in forced)
    cal = calibration_figures(logits, y, t, classes) | {
        "fitted_on": chosen_on, "fitted_at": now, "fitted": fit_t,
        "fitted_below_minimum": TEMPERATURE in forced, "size_checks": [v.to_dict() for v in verdicts]}
    return DecisionFit(t, op, cal, np.asarray(logits), y, verdicts, forced)


def apply_fit(card: Any, fit: DecisionFit) -> Any:
    """The card with the fit's values; the values it replaces go to the end of its history
    (a card that never had a fit, temperature 1 and no operating point, adds nothing). A fit that
    set nothing (too few images) leaves the card as it was."""
    if not fit.temperature_fitted and fit.operating_point is None:
        return card
    history = list(card.history)
    if card.operating_point is not None or card.calibration is not None:
        history.append(card.decision_state() | {"replaced_at": fit.calibration.get("fitted_at")})
    return card.with_(operating_point=fit.operating_point, temperature=fit.temperature,
                      calibration=fit.calibration if fit.temperature_fitted else None,
                      fitted_below_minimum=fit.forced, history=tuple(history))


def write_calibration_report(folder: str | Path, fit: DecisionFit, classes: Sequence[str],
                             model: str, prefix: str = "", ood: Any = None) -> dict[str, Path]:
    """``calibration.json``, ``calibration.md`` and, when T was fitted, ``reliability.png`` in
    ``folder`` (a stale diagram from an earlier fit is removed); ``ood`` (an ``eval.ood.OODFit``):
    the out-of-distribution gate refitted with them."""
    from bonedeploy.util.fs import write_json, write_text

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    paths = {"json": folder / (prefix + REPORT_JSON), "md": folder / (prefix + REPORT_MD),
             "png": folder / (prefix + RELIABILITY_PNG)}
    if fit.temperature_fitted:
        plot_reliability(fit.logits, fit.labels, fit.temperature, classes, paths["png"],
                         title=f"{model}: reliability on {len(fit.labels)} images")
    else:
        paths.pop("png").unlink(missing_ok=True)
    op = fit.operating_point
    doc = {"model": model, "temperature": fit.temperature, "temperature_fitted": fit.temperature_fitted,
           "calibration": fit.calibration, "operating_point": op.to_dict() if op else None,
           "fitted_below_minimum": list(fit.forced), "notes": fit.notes(), "same_split": True,
           "note": same_split_note(fit)}
    text = render_markdown(fit, model, paths["png"].name if "png" in paths else None)
    if ood is not None:
        from bonedeploy.eval.ood import report_lines

        doc["ood"], doc["ood_notes"] = ood.gate.to_dict(), list(ood.notes)
        text += "\n".join(report_lines(ood.gate, ood.notes))
    write_json(paths["json"], doc)
    write_text(paths["md"], text)
    return paths


def same_split_note(fit: DecisionFit) -> str:
    where = fit.calibration.get("fitted_on")
    return (f"The temperature and the operating point were both fitted on the same {len(fit.labels)} "
            f"images ({where}): their figures are optimistic for new images. "
            "Pass --data DIR to `bonedeploy calibrate` to fit them on a separate calibration set.")


def render_markdown(fit: DecisionFit, model: str, png_name: str | None) -> str:
    c, op = fit.calibration, fit.operating_point
    lines = [f"# {model}: calibration and operating point", ""]
    lines += [f"**{note[0].upper() + note[1:]}.**" for note in fit.notes()] + ([""] if fit.notes() else [])
    if fit.temperature_fitted:
        from bonedeploy.ui.markdown import pipe_table

        rows = [[k, f"{c['before'][k]:.4f}", f"{c['after'][k]:.4f}"] for k in ("nll", "ece", "brier")]
        lines += [
            f"Temperature **T = {fit.temperature:.4f}** (probabilities = softmax(logits / T)), fitted by "
            f"minimising the NLL on {c['n']} images ({c['fitted_on']}).", "",
            pipe_table(["figure", "before (T = 1)", "after"], rows, "lrr"), "",
            f"ECE uses {c['ece_bins']} equal-width bins of the top-class probability; Brier is the "
            "multi-class sum of squared errors.", ""]
    else:
        lines += [f"Temperature **T = 1** (not fitted): the probabilities are softmax(logits) on "
                  f"{c['n']} images ({c['fitted_on']}): NLL {c['before']['nll']:.4f}, ECE "
                  f"{c['before']['ece']:.4f}, Brier {c['before']['brier']:.4f}. Fit it with "
                  "`bonedeploy calibrate CHECKPOINT --data DIR` on a larger labelled set.", ""]
    lines += [f"Operating point: {op.describe() if op else 'not set (argmax)'}.", ""]
    if fit.temperature_fitted or op is not None:
        lines += [f"**{same_split_note(fit)}**", ""]
    if png_name:
        lines += [f"![reliability diagram]({png_name})", ""]
    return "\n".join(lines)


# --- bonedeploy calibrate -----------------------------------------------------------------
@dataclass(frozen=True)
class CalibrateConfig:
    checkpoint: Path
    data: Path | None = None  # a labelled image-folder tree instead of the recorded validation split
    target_sensitivity: float | None = None
    out: Path | None = None  # default: rewrite the checkpoint in place (atomically)
    force: bool = False  # fit below the minimum set sizes (the card records it)
    ood_fpr: float | None = None  # the OOD gate's target; None: eval.ood.DEFAULT_FPR

    def validate(self) -> None:
        from bonedeploy.eval.ood import validate_fpr

        validate_target(self.target_sensitivity)
        validate_fpr(self.ood_fpr)


@dataclass
class CalibrateResult:
    out: Path
    fit: DecisionFit
    reports: dict[str, Path]
    replaced: dict[str, Any] | None  # the decision values now at the end of the card's history
    ood: Any = None  # eval.ood.OODFit: the out-of-distribution gate refitted


def calibrate_checkpoint(config: CalibrateConfig) -> CalibrateResult:
    """Fit T and the operating point for a checkpoint and write it back (in place or to ``out``).
    Refuses a set below the minimum sizes (before running the model) unless ``config.force``."""
    from bonedeploy.artefacts.checkpoint import (card_from_checkpoint, load_checkpoint,
                                                 model_from_checkpoint, save_checkpoint)

    config.validate()
    src = Path(config.checkpoint)
    ckpt = load_checkpoint(src)
    card = card_from_checkpoint(ckpt, str(src))
    x, labels, where = calibration_inputs(ckpt, config.data, card, src)
    way_out = "Pass --data DIR with a larger labelled set"
    refuse_small(decision_verdicts(labels, card.classes, config.target_sensitivity, where),
                 config.force, way_out)
    model = model_from_checkpoint(ckpt, str(src))
    logits = model_logits(model, card, x, src)
    fit = fit_decision(logits, labels, card.classes, config.target_sensitivity, where,
                       force=config.force, way_out=way_out)
    new_card = apply_fit(card, fit)
    from bonedeploy.eval.ood import refit_for_calibrate
    from bonedeploy.models.ood import CKPT_KEY

    ood = refit_for_calibrate(model, card, ckpt, config.data, x, labels, where, config.ood_fpr, src)
    new_card = new_card.with_(ood=ood.gate)
    out = Path(config.out) if config.out is not None else src
    save_checkpoint(out, {**ckpt, CKPT_KEY: ood.checkpoint_entry(), "card": new_card.to_dict()})
    reports = write_calibration_report(out.parent, fit, card.classes, card.model, prefix="", ood=ood)
    replaced = new_card.history[-1] if len(new_card.history) > len(card.history) else None
    return CalibrateResult(out, fit, reports, replaced, ood)


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
    """fp32 logits on the CPU through the torch backend (as the export reference runs), in the
    batches of the one loop every artefact runs through (``parity.backend_logits``)."""
    from bonedeploy.backends.torch import TorchBackend
    from bonedeploy.eval.parity import backend_logits

    with TorchBackend.from_module(model, card, Path(path), device="cpu", precision="fp32") as backend:
        return backend_logits(backend, x)

