"""Fitting the out-of-distribution gate: the scores compared, the threshold, the report.

``fit_ood`` (what ``train`` runs at its end and ``calibrate`` refits) takes the model and three
sets of images: the training split (the detector's parameters are fitted on its features), the
validation split (the threshold is set on its scores: never on images the detector was fitted on)
and generated non-radiographs (``bonedeploy.data.synth.ood``, one seed, never the benchmark's).

Every method in ``CANDIDATES`` is fitted and scored by the same torch head the artefacts carry
(``bonedeploy.models.ood``), so the threshold is set on exactly what ``infer`` will compute. The
winner maximises, over the generated sets, the *worst* AUROC against the validation images (a
gate is as good as the kind of input it misses); ties within 0.005 go to the larger worst share
caught at the method's own threshold, then to the mean AUROC. Every method's figures are kept.

The threshold (``choose_threshold``) is the k-th smallest of the n validation scores with
k = ceil((n + 1)(1 - fpr)): on new in-distribution images the flagged share is then Beta(n + 1 - k,
k) distributed, whatever the scores' distribution, with mean (n + 1 - k) / (n + 1) <= fpr. With
n < 1 / fpr - 1 no k meets the target; the largest score is taken (mean 1 / (n + 1)) and the gate
says so: below its minimum it refuses more in-distribution images than asked, never fewer.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Sequence

import numpy as np

from bonedeploy.artefacts.ood import METHODS, OODGate
from bonedeploy.errors import ConfigError, DataError

DEFAULT_FPR = 0.01
MAX_FPR = 0.5
# (method, power): the signed square root before Mahalanobis generalised better from the demo's
# few training images to unseen non-radiographs (benchmarks/ood.py); the plain published form is
# compared too.
CANDIDATES: tuple[tuple[str, bool], ...] = (("energy", False), ("mahalanobis", True),
                                            ("mahalanobis", False), ("knn", False))
KNN_K = 10  # neighbours (Sun et al. use 50 of 50,000; ours sees hundreds)
KNN_BANK = 4096  # training features kept for k-NN at most: the bank is in every artefact
PROBE_KINDS = ("blank", "noise", "gradient", "text", "pattern")  # generated at fit time
PROBE_PER_KIND = 6
PROBE_SEED = 1801  # the benchmark draws other seeds
TIE = 0.005
CRITERION = ("highest worst-case AUROC (validation vs each generated non-radiograph set); ties "
             f"within {TIE} to the larger worst share caught at the method's threshold, then the mean "
             "AUROC, then the order energy, mahalanobis-sqrt, mahalanobis, knn")


def validate_fpr(fpr: float | None) -> float:
    fpr = DEFAULT_FPR if fpr is None else float(fpr)
    if not 0.0 < fpr <= MAX_FPR:
        raise ConfigError(f"--ood-fpr {fpr}: must be in (0, {MAX_FPR}] (the share of in-distribution "
                          "images the gate may refuse, e.g. 0.01)")
    return fpr


def min_images(fpr: float) -> int:
    """The fewest threshold images for which some order statistic meets ``fpr`` on average."""
    return max(1, math.ceil(1.0 / fpr - 1.0 - 1e-9))


@dataclass(frozen=True)
class ThresholdChoice:
    threshold: float
    k: int  # the order statistic (1-based) the threshold is
    n: int
    expected_fpr: float
    fpr_upper95: float


def choose_threshold(scores: Sequence[float], fpr: float) -> ThresholdChoice:
    """The conformal threshold for ``fpr`` on in-distribution ``scores`` (see the module docstring)."""
    s = np.sort(np.asarray(scores, dtype=np.float64))
    s = s[np.isfinite(s)]
    n = len(s)
    if n == 0:
        raise DataError("no in-distribution scores to set the OOD threshold on")
    k = min(n, math.ceil((n + 1) * (1.0 - fpr) - 1e-9))
    a, b = n + 1 - k, k  # flagged share ~ Beta(a, b)
    return ThresholdChoice(float(s[k - 1]), k, n, a / (n + 1), _beta_upper95(a, b))


def _beta_upper95(a: int, b: int) -> float:
    from scipy.stats import beta

    return float(beta.ppf(0.95, a, b))


def auroc(inside: np.ndarray, outside: np.ndarray) -> float:
    """P(score of an outside image > an inside one), ties counted half (Mann-Whitney)."""
    inside, outside = np.asarray(inside, np.float64), np.asarray(outside, np.float64)
    both = np.concatenate([inside, outside])
    order = both.argsort(kind="mergesort")
    ranks = np.empty(len(both))
    ranks[order] = np.arange(1, len(both) + 1)
    for v in np.unique(both):  # average ranks of ties
        tied = both == v
        if tied.sum() > 1:
            ranks[tied] = ranks[tied].mean()
    n1, n2 = len(inside), len(outside)
    return float((ranks[n1:].sum() - n2 * (n2 + 1) / 2) / (n1 * n2))


def fpr_at_tpr(inside: np.ndarray, outside: np.ndarray, tpr: float = 0.95) -> float:
    """Share of inside images flagged at the highest threshold that still catches ``tpr`` of the
    outside ones (flagged: score >= threshold)."""
    out = np.sort(np.asarray(outside, np.float64))[::-1]
    t = out[max(0, math.ceil(tpr * len(out) - 1e-9) - 1)]
    return float(np.mean(np.asarray(inside, np.float64) >= t))


# --- fitting the detectors ----------------------------------------------------------------
def signed_sqrt(f: np.ndarray) -> np.ndarray:
    return np.sign(f) * np.sqrt(np.abs(f))


def ledoit_wolf(residuals: np.ndarray) -> tuple[np.ndarray, float]:
    """Covariance of centred rows shrunk towards a scaled identity (Ledoit and Wolf 2004): with
    fewer training images than feature dimensions the sample covariance cannot be inverted."""
    r = np.asarray(residuals, np.float64)
    n, d = r.shape
    s = r.T @ r / n
    mu = np.trace(s) / d
    delta = ((s - mu * np.eye(d)) ** 2).sum()
    norms = (r ** 2).sum(axis=1)
    beta = (norms ** 2).sum() / n ** 2 - ((r @ s) * r).sum() * 2 / n ** 2 + (s ** 2).sum() / n
    shrink = 1.0 if delta <= 0 else float(np.clip(beta / delta, 0.0, 1.0))
    return (1 - shrink) * s + shrink * mu * np.eye(d), shrink


def fit_tensors(method: str, features: np.ndarray | None, labels: np.ndarray, power: bool,
                seed: int = 0) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """The head's buffers for ``method`` and what to record about the fit."""
    if method == "energy":
        return {}, {}
    f = signed_sqrt(features) if power else np.asarray(features, np.float64)
    if method == "mahalanobis":
        classes = np.unique(labels)
        means = np.stack([f[labels == c].mean(axis=0) for c in classes])
        cov, shrink = ledoit_wolf(f - means[np.searchsorted(classes, labels)])
        proj = np.linalg.cholesky(np.linalg.inv(cov))  # precision = L L'
        return ({"proj": proj.astype(np.float32), "means": (means @ proj)[None].astype(np.float32)},
                {"shrinkage": round(shrink, 6), "classes": len(classes)})
    if method == "knn":
        bank = f / np.maximum(np.linalg.norm(f, axis=1, keepdims=True), 1e-12)
        if len(bank) > KNN_BANK:
            bank = bank[np.sort(np.random.default_rng(seed).choice(len(bank), KNN_BANK, replace=False))]
        return {"bank": np.ascontiguousarray(bank.T, dtype=np.float32)}, {"bank": len(bank), "k": min(KNN_K, len(bank))}
    raise ConfigError(f"unknown OOD method {method!r}; valid: {', '.join(METHODS)}")


@dataclass
class Scored:
    """One set of images as the gate sees it: logits, pooled features, per-image pixel spread."""

    logits: np.ndarray
    features: np.ndarray | None
    spread: np.ndarray

    def __len__(self) -> int:
        return len(self.logits)


def head_scores(method: str, tensors: dict[str, np.ndarray], power: bool, k: int | None,
                data: Scored, min_std: float) -> np.ndarray:
    """Scores of ``data`` by the torch head every artefact carries (``models.ood.OODHead``)."""
    import torch

    from bonedeploy.models.ood import OODHead

    head = OODHead(method, tensors, power=power, k=k, min_std=min_std).eval()
    feats = None if data.features is None else torch.as_tensor(data.features, dtype=torch.float32)
    with torch.inference_mode():
        out = head.score(torch.as_tensor(data.spread, dtype=torch.float32),
                         torch.as_tensor(data.logits, dtype=torch.float32), feats)
    return out.numpy().astype(np.float64)


# --- the fit ---------------------------------------------------------------------------------
@dataclass
class OODFit:
    gate: OODGate
    tensors: dict[str, np.ndarray] = field(repr=False)
    power: bool
    k: int | None
    val_scores: np.ndarray = field(repr=False)
    notes: list[str] = field(default_factory=list)

    def checkpoint_entry(self) -> dict[str, Any]:
        """What the checkpoint stores beside the card (``models.ood.CKPT_KEY``): tensors as tensors."""
        import torch

        return {"tensors": {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in self.tensors.items()},
                "k": self.k}


def fit_ood(train: Scored, train_labels: np.ndarray, val: Scored, probes: dict[str, Scored],
            fpr: float | None = None, *, feature_layer: str | None, fitted_on: str, threshold_on: str,
            min_std: float, no_features: str | None = None) -> OODFit:
    """Fit every candidate, choose by ``CRITERION``, set the winner's threshold; see the module
    docstring. ``no_features``: why there are no features (then only the logit score competes)."""
    fpr = validate_fpr(fpr)
    if len(val) == 0:
        raise DataError(f"{threshold_on}: no images to set the OOD threshold on")
    rows, fitted = [], {}
    for method, power in CANDIDATES:
        if method != "energy" and train.features is None:
            continue
        tensors, info = fit_tensors(method, train.features, np.asarray(train_labels), power)
        k = info.get("k")
        score = lambda d: head_scores(method, tensors, power, k, d, min_std)  # noqa: E731
        v = score(val)
        choice = choose_threshold(v, fpr)
        per_set = {}
        for name, probe in probes.items():
            p = score(probe)
            per_set[name] = {"auroc": round(auroc(v, p), 4), "caught": round(float(np.mean(p > choice.threshold)), 4)}
        name = _label(method, power)
        rows.append({"method": name, "threshold": choice.threshold, **info,
                     "auroc_min": min(s["auroc"] for s in per_set.values()) if per_set else None,
                     "auroc_mean": round(float(np.mean([s["auroc"] for s in per_set.values()])), 4) if per_set else None,
                     "caught_min": min(s["caught"] for s in per_set.values()) if per_set else None,
                     "sets": per_set})
        fitted[name] = (method, power, tensors, k, v, choice)
    best = max(rows, key=_rank)
    for r in rows:
        r["chosen"] = r is best
    method, power, tensors, k, v, choice = fitted[best["method"]]
    gate = OODGate(
        method=method, threshold=choice.threshold, target_fpr=fpr, n_images=choice.n,
        expected_fpr=round(choice.expected_fpr, 6), fpr_upper95=round(choice.fpr_upper95, 6),
        min_images=min_images(fpr), feature_layer=feature_layer if method != "energy" else None,
        feature_dim=None if method == "energy" or train.features is None else int(train.features.shape[1]),
        transform="signed-sqrt" if power else None,
        fitted_on=fitted_on, threshold_on=threshold_on,
        fitted_at=datetime.now(timezone.utc).isoformat(timespec="seconds"),
        input_checks={"min_std": min_std}, criterion=CRITERION, comparison=tuple(rows))
    notes = []
    if gate.below_minimum:
        notes.append(f"OOD threshold set on {threshold_on}: {fpr:.1%} needs at least "
                     f"{gate.min_images}, so the largest score is the threshold and about "
                     f"{gate.expected_fpr:.1%} of new in-distribution images will be refused (below "
                     f"{gate.fpr_upper95:.1%} with 95% probability); refit on more images with "
                     "`bonedeploy calibrate CHECKPOINT --data DIR`")
    if no_features:
        notes.append(f"OOD gate on the logits only (energy): {no_features}")
    return OODFit(gate, tensors, power, k, v, notes)


def feature_layer_of(model: Any, card: Any) -> tuple[str | None, str | None]:
    """The module whose pooled output the feature scores read, or (None, why there is none)."""
    from bonedeploy.models import get_model_entry, last_conv_layer

    try:
        return last_conv_layer(get_model_entry(card.model).family, model), None
    except ConfigError as e:
        return None, str(e)


def measure(model: Any, layer: str | None, x: Any, device: Any = "cpu", batch: int = 32) -> Scored:
    from bonedeploy.models.ood import run_with_features

    return Scored(*run_with_features(model, layer, x, batch=batch, device=device))


def probe_images(spec: Any, per_kind: int = PROBE_PER_KIND, seed: int = PROBE_SEED,
                 kinds: Sequence[str] = PROBE_KINDS) -> dict[str, np.ndarray]:
    """Generated non-radiographs, preprocessed with the model's spec, by kind."""
    from bonedeploy.data.synth.ood import make_images

    return {k: spec.apply_batch(make_images(k, per_kind, spec.crop_size, seed)) for k in kinds}


def fit_for_model(model: Any, card: Any, train: Scored, y_train: Any, val: Scored, fpr: float | None, *,
                  layer: str | None, no_features: str | None, fitted_on: str, threshold_on: str,
                  device: Any = "cpu", batch: int = 32) -> OODFit:
    """``fit_ood`` for a model in memory, given its measured training and validation images
    (``measure`` with ``feature_layer_of``'s layer); runs it on the generated probes too."""
    from bonedeploy.models.ood_spec import DEFAULT_MIN_STD

    probes = {k: measure(model, layer, x, device, batch) for k, x in probe_images(card.preprocess).items()}
    return fit_ood(train, np.asarray(y_train), val, probes, fpr, feature_layer=layer, fitted_on=fitted_on,
                   threshold_on=threshold_on, min_std=DEFAULT_MIN_STD, no_features=no_features)


def _label(method: str, power: bool) -> str:
    return f"{method}-sqrt" if power else method


def method_of(label: str) -> tuple[str, bool]:
    """``mahalanobis-sqrt`` -> ("mahalanobis", True)."""
    return label.removesuffix("-sqrt"), label.endswith("-sqrt")


def _rank(row: dict[str, Any]) -> tuple[float, float, float]:
    worst = row["auroc_min"] if row["auroc_min"] is not None else 0.0
    return (round(worst / TIE) * TIE, row["caught_min"] or 0.0, row["auroc_mean"] or 0.0)


def comparison_table(gate: OODGate) -> tuple[list[str], list[list[Any]]]:
    """Header and rows of the methods compared (for report.md and calibration.md)."""
    header = ["score", "worst AUROC", "mean AUROC", "worst share caught", "threshold", "chosen"]
    rows = [[r["method"], _fmt(r.get("auroc_min")), _fmt(r.get("auroc_mean")), _fmt(r.get("caught_min")),
             f"{r['threshold']:.4g}", "**yes**" if r.get("chosen") else ""] for r in gate.comparison]
    return header, rows


def _fmt(v: float | None) -> str:
    return "–" if v is None else f"{v:.3f}"


def report_lines(gate: OODGate | None, notes: Sequence[str] = ()) -> list[str]:
    """The 'Out-of-distribution gate' section of the training and calibration reports."""
    from bonedeploy.ui.markdown import pipe_table

    if gate is None:
        return []
    header, rows = comparison_table(gate)
    kinds = sorted({k for r in gate.comparison for k in (r.get("sets") or {})})
    lines = ["## Out-of-distribution gate (stored in the checkpoint)", "",
             f"- {gate.describe()}.",
             f"- score: {gate.method}" + (f" on the pooled output of `{gate.feature_layer}` "
                                         f"({gate.feature_dim} features)" if gate.feature_layer else " of the logits")
             + f"; fitted on {gate.fitted_on}; threshold on {gate.threshold_on}.",
             f"- blank images (pixel spread < {gate.input_checks.get('min_std')}) are refused whatever the score."]
    lines += [f"- **{n}**" for n in notes]
    lines += ["", f"Scores compared on generated non-radiographs ({', '.join(kinds)}; {PROBE_PER_KIND} "
              f"each) against the validation images; chosen by {gate.criterion}.", "",
              pipe_table(header, rows, "lrrrrl"), ""]
    return lines


# --- bonedeploy calibrate ---------------------------------------------------------------------
def refit_for_calibrate(model: Any, card: Any, ckpt: dict[str, Any], data: Any, x: np.ndarray,
                        labels: np.ndarray, where: str, fpr: float | None, src: Any) -> OODFit:
    """The gate refitted by ``calibrate``: without ``data``, features of the checkpoint's training
    split and the threshold on ``x`` (its validation split); with ``data`` (the user's own images),
    a seeded stratified half of them for the features and the other half for the threshold, so
    the threshold is never set on images the detector was fitted on."""
    layer, why = feature_layer_of(model, card)
    if data is None:
        fit_x, fit_y, fitted_on = training_split(ckpt, card.preprocess, src)
        thr_x, threshold_on = x, where
    else:
        first, second = halves(labels)
        fit_x, fit_y, thr_x = x[first], labels[first], x[second]
        fitted_on = f"a stratified half of {data} ({len(first)} images)"
        threshold_on = f"the other half of {data} ({len(second)} images)"
    return fit_for_model(model, card, measure(model, layer, fit_x), fit_y, measure(model, layer, thr_x), fpr,
                         layer=layer, no_features=why, fitted_on=fitted_on, threshold_on=threshold_on)


def halves(labels: np.ndarray, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Indices of two stratified halves (seeded): each class split as evenly as it goes."""
    labels = np.asarray(labels)
    rng = np.random.default_rng(seed)
    first, second = [], []
    for c in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == c))
        cut = (len(idx) + 1) // 2
        first += list(idx[:cut])
        second += list(idx[cut:])
    if not second:
        raise DataError("too few images to refit the OOD gate: it needs two halves (features and "
                        "threshold) of at least one image each")
    return np.sort(first), np.sort(second)


def training_split(ckpt: dict[str, Any], spec: Any, src: Any) -> tuple[np.ndarray, np.ndarray, str]:
    """The checkpoint's recorded training images, decoded, with labels and where they came from."""
    from pathlib import Path

    from bonedeploy.data.decode import decode_dataset

    split = ckpt.get("split") or {}
    root = split.get("root")
    if not (root and split.get("train") and Path(root).is_dir()):
        raise DataError(f"{src}: the OOD gate is refitted on the training split's features, and its "
                        f"images ({root!r}) are not here; pass --data DIR (half of it fits the gate, "
                        "the other half sets its threshold)")
    items = [(Path(e["path"]), int(e["label"])) for e in split["train"]]
    ds = decode_dataset(Path(root), items, spec, skip_bad=True)
    return ds.x, np.asarray(ds.y), f"the checkpoint's training split ({len(ds.y)} images of {root})"
