"""The operating point: the threshold on calibrated p(positive) chosen for a target sensitivity.

A clinic reads a fracture classifier at a threshold chosen so that it misses at most a set share
of fractures (a missed fracture costs more than a second look). The chosen threshold is the
*highest* one whose sensitivity on the selection split is >= the target: the most specific
point that still meets the target. It is reported with stratified bootstrap 95% intervals of the
sensitivity and specificity at that threshold, since a validation split of tens of images pins
neither down.

Fitting lives here; the ``OperatingPoint`` record itself is an on-disk format
(``bonedeploy.artefacts.operating_point``) because every artefact's card carries it.
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import numpy as np

from bonedeploy.artefacts.operating_point import OperatingPoint
from bonedeploy.errors import ConfigError, DataError

N_BOOTSTRAP = 2000


def validate_target(target: float | None) -> float | None:
    if target is not None and not 0.0 < float(target) <= 1.0:
        raise ConfigError(f"--target-sensitivity {target}: must be in (0, 1], e.g. 0.95")
    return None if target is None else float(target)


def sensitivity_specificity(p_pos: np.ndarray, is_pos: np.ndarray, threshold: float) -> tuple[float, float]:
    """Sensitivity and specificity of ``p_pos >= threshold`` (NaN where a class is absent)."""
    from bonedeploy.eval.metrics import sensitivity_specificity as rates

    p_pos, is_pos = np.asarray(p_pos, dtype=np.float64), np.asarray(is_pos, dtype=bool)
    # class index 0 = positive, 1 = the rest
    sens, spec = rates((~is_pos).astype(int), (p_pos < threshold).astype(int), 0, zero_division=float("nan"))
    return float(sens), float(spec)


def choose_threshold(p_pos: Sequence[float], is_pos: Sequence[bool], target: float) -> float:
    """The highest threshold t with sensitivity(p_pos >= t) >= ``target``.

    Sensitivity only changes at positive scores, so t is the k-th largest positive score with
    k = ceil(target * positives): any higher threshold keeps fewer than k positives.
    """
    target = validate_target(target)
    p_pos, is_pos = np.asarray(p_pos, dtype=np.float64), np.asarray(is_pos, dtype=bool)
    scores = np.sort(p_pos[is_pos])[::-1]
    if len(scores) == 0:
        raise DataError("no positive images to choose an operating point on")
    k = max(1, math.ceil(target * len(scores) - 1e-9))
    return float(scores[k - 1])


def bootstrap_ci(p_pos: np.ndarray, is_pos: np.ndarray, threshold: float, n_boot: int = N_BOOTSTRAP,
                 seed: int = 0, confidence: float = 0.95) -> tuple[tuple[float, float], tuple[float, float]]:
    """Percentile intervals of sensitivity and specificity at a fixed threshold, resampling the
    positives and the negatives separately (each rate is a proportion within its class)."""
    rng = np.random.default_rng(seed)
    hit = np.asarray(p_pos, dtype=np.float64) >= threshold
    is_pos = np.asarray(is_pos, dtype=bool)
    lo, hi = (1 - confidence) / 2 * 100, (1 + confidence) / 2 * 100

    def interval(outcomes: np.ndarray) -> tuple[float, float]:
        if len(outcomes) == 0:
            return (float("nan"), float("nan"))
        draws = rng.integers(0, len(outcomes), size=(n_boot, len(outcomes)))
        rates = outcomes[draws].mean(axis=1)
        return (float(np.percentile(rates, lo)), float(np.percentile(rates, hi)))

    return interval(hit[is_pos].astype(float)), interval((~hit[~is_pos]).astype(float))


def choose_operating_point(p_pos: Sequence[float], is_pos: Sequence[bool], positive_class: str,
                           target: float | None, chosen_on: str | None = None,
                           chosen_at: str | None = None, seed: int = 0,
                           fitted_below_minimum: bool = False) -> OperatingPoint:
    """The operating point for ``target`` (None: argmax, reported at p >= 0.5) with its figures.
    Any set size is accepted here; the minimum is ``bonedeploy.eval.set_size``'s, checked by the callers."""
    target = validate_target(target)
    p_pos, is_pos = np.asarray(p_pos, dtype=np.float64), np.asarray(is_pos, dtype=bool)
    if len(p_pos) != len(is_pos) or len(p_pos) == 0:
        raise DataError(f"operating point: {len(p_pos)} scores for {len(is_pos)} labels")
    threshold = choose_threshold(p_pos, is_pos, target) if target is not None else None
    at = 0.5 if threshold is None else threshold
    sens, spec = sensitivity_specificity(p_pos, is_pos, at)
    sens_ci, spec_ci = bootstrap_ci(p_pos, is_pos, at, seed=seed)
    return OperatingPoint(positive_class=positive_class, threshold=threshold, target_sensitivity=target,
                          sensitivity=_finite(sens), sensitivity_ci95=_finite_pair(sens_ci),
                          specificity=_finite(spec), specificity_ci95=_finite_pair(spec_ci),
                          n=int(len(p_pos)), n_positive=int(is_pos.sum()), chosen_on=chosen_on,
                          chosen_at=chosen_at, fitted_below_minimum=fitted_below_minimum)


def _finite(v: float) -> float | None:
    return float(v) if math.isfinite(v) else None


def _finite_pair(v: tuple[float, float]) -> tuple[float, float] | None:
    return (float(v[0]), float(v[1])) if all(math.isfinite(x) for x in v) else None


def summarise_parity(name: str, parity: dict[str, Any]) -> str:
    """One report line: a file's figures at the operating point (``ParityResult.to_dict()``)."""
    rule = (parity.get("decision") or {}).get("rule", "the operating point")
    parts = []
    for key in ("sensitivity", "specificity"):
        r, c = parity.get(f"op_{key}_ref"), parity.get(f"op_{key}_cand")
        if r is not None and c is not None:
            parts.append(f"{key} {r:.3f} -> {c:.3f}")
    flips = parity.get("op_flips") or []
    names = ", ".join(str(f["path"]).rsplit("/", 1)[-1] for f in flips[:3]) + (" …" if len(flips) > 3 else "")
    parts.append(f"{len(flips)} decision flip(s)" + (f" ({names})" if flips else ""))
    if parity.get("top1_agreement") is not None:
        parts.append(f"argmax agreement {parity['top1_agreement']:.1%}")
    return f"{name} at {rule}: " + ", ".join(parts)
