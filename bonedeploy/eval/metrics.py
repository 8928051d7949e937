"""Classification metrics shared by training reports, infer and bench.

Numpy and the standard library only: a labelled ``infer`` on the base (edge) install reports them,
and a one-image run does not pay for importing scikit-learn, which takes longer than the prediction
(``python -X importtime -c "import sklearn.metrics"``; ``benchmarks/cold_start.py``). Each
function reproduces scikit-learn's or scipy's definition, zero-division rules included;
``tests/eval/test_metrics.py`` holds them to those libraries on random label sets.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from bonedeploy import POSITIVE_CLASS


# Φ⁻¹(0.975) as scipy's ndtri rounds it: the default interval is then scipy's to the last bit
# (statistics.NormalDist's is 2 ulp away), and a labelled run imports nothing for it.
_Z = {0.95: 1.959963984540054}


def _normal_quantile(p: float) -> float:
    from statistics import NormalDist

    return NormalDist().inv_cdf(p)


def wilson_interval(successes: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """Wilson score interval without continuity correction (Newcombe 1998), as scipy's
    ``binomtest(k, n).proportion_ci(method="wilson")``: the bound at k = 0 or k = n is exact."""
    k, n = int(successes), int(n)
    if not 0 <= k <= n:
        raise ValueError(f"wilson_interval: successes must be in 0..n, got {k} of {n}")
    if n == 0:
        return (float("nan"), float("nan"))
    z = _Z.get(confidence) or _normal_quantile(0.5 + 0.5 * confidence)
    p = k / n
    denom = 2 * (n + z**2)
    center = (2 * n * p + z**2) / denom
    delta = z / denom * math.sqrt(4 * n * p * (1 - p) + z**2)
    return (0.0 if k == 0 else center - delta, 1.0 if k == n else center + delta)


def softmax(logits: np.ndarray, dtype: Any = np.float32) -> np.ndarray:
    """Row-wise softmax, computed in float64 and returned as ``dtype``: float32 for reports,
    float64 for the parity gate (the fp32 gate compares differences of ~1e-7)."""
    z = np.asarray(logits, dtype=np.float64)
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return (e / e.sum(axis=1, keepdims=True)).astype(dtype, copy=False)


def sensitivity_specificity(y_true: Sequence[int], y_pred: Sequence[int], positive_index: int,
                            zero_division: float | None = None) -> tuple[float | None, float | None]:
    """Recall of the positive class and of the rest (one-vs-rest beyond two classes). An empty
    group gives ``zero_division`` (None: undefined, not a number that looks measured)."""
    y_true, y_pred = np.asarray(y_true, dtype=int), np.asarray(y_pred, dtype=int)
    out = []
    for group in (y_true == positive_index, y_true != positive_index):
        if not group.any():
            out.append(zero_division)
            continue
        hits = (y_pred[group] == positive_index) == (y_true[group] == positive_index)
        out.append(float(hits.mean()))
    return out[0], out[1]


def confusion_matrix(y_true: Sequence[int], y_pred: Sequence[int], n_classes: int) -> np.ndarray:
    """Rows true, columns predicted, for classes 0..n_classes-1 (scikit-learn's layout)."""
    y_true, y_pred = np.asarray(y_true, dtype=np.int64), np.asarray(y_pred, dtype=np.int64)
    for name, y in (("y_true", y_true), ("y_pred", y_pred)):
        if y.size and (y.min() < 0 or y.max() >= n_classes):
            raise ValueError(f"confusion_matrix: {name} holds a class outside 0..{n_classes - 1}")
    return np.bincount(y_true * n_classes + y_pred, minlength=n_classes**2).reshape(n_classes, n_classes)


def per_class_scores(cm: np.ndarray) -> dict[str, np.ndarray]:
    """Precision, recall, F1 and support per class; 0 where undefined (scikit-learn's
    ``zero_division=0``). F1 is 2·tp / (support + predicted), scikit-learn's form."""
    tp, support, predicted = np.diag(cm).astype(np.float64), cm.sum(axis=1), cm.sum(axis=0)
    return {"precision": _divide(tp, predicted), "recall": _divide(tp, support),
            "f1-score": _divide(2 * tp, support + predicted), "support": support.astype(np.float64)}


def _divide(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    return np.divide(num, den, out=np.zeros(num.shape, np.float64), where=den != 0)


def classification_report(cm: np.ndarray, classes: Sequence[str]) -> dict[str, Any]:
    """scikit-learn's ``classification_report(..., output_dict=True, zero_division=0)`` for all
    classes, from the confusion matrix."""
    scores = per_class_scores(cm)
    n = float(cm.sum())
    out: dict[str, Any] = {c: {k: float(v[i]) for k, v in scores.items()} for i, c in enumerate(classes)}
    out["accuracy"] = float(np.trace(cm) / n)
    out["macro avg"] = {k: float(np.average(v)) for k, v in scores.items() if k != "support"}
    out["weighted avg"] = {k: float(np.average(v, weights=scores["support"]))
                           for k, v in scores.items() if k != "support"}
    out["macro avg"]["support"] = out["weighted avg"]["support"] = n
    return out


def roc_auc(y_positive: Sequence[int], scores: Sequence[float]) -> float | None:
    """Area under the ROC curve by the trapezoid rule over the distinct score thresholds
    (scikit-learn's ``roc_auc_score`` for two classes); None when only one class is present."""
    y = np.asarray(y_positive, dtype=np.float64)
    s = np.asarray(scores, dtype=np.float64)
    if not np.isfinite(s).all():
        raise ValueError("roc_auc: the scores hold NaN or infinity")
    if y.size == 0 or y.min() == y.max():
        return None
    order = np.argsort(s, kind="mergesort")[::-1]
    s, y = s[order], y[order]
    last = np.r_[np.flatnonzero(np.diff(s)), y.size - 1]  # the last sample of each distinct score
    tps = np.cumsum(y)[last]
    fps = 1 + last - tps
    tpr, fpr = np.r_[0.0, tps / tps[-1]], np.r_[0.0, fps / fps[-1]]
    return float((np.diff(fpr) * (tpr[1:] + tpr[:-1]) / 2.0).sum())


def classify(probs: np.ndarray, classes: Sequence[str], threshold: float | None = None) -> np.ndarray:
    """Predicted class index: argmax (the seed), or p(positive) >= threshold when given."""
    if threshold is None:
        return np.asarray(probs).argmax(axis=1)
    pos = list(classes).index(POSITIVE_CLASS)
    neg = 1 - pos if len(classes) == 2 else None
    if neg is None:
        raise ValueError("a threshold needs exactly two classes")
    return np.where(np.asarray(probs)[:, pos] >= threshold, pos, neg)


def classification_summary(
    y_true: Sequence[int],
    probs: np.ndarray,
    classes: Sequence[str],
    threshold: float | None = None,
    positive: str = POSITIVE_CLASS,
) -> dict[str, Any]:
    """Accuracy with a 95% Wilson interval, sensitivity/specificity for ``positive``, F1,
    ROC AUC, confusion matrix and the per-class report, as plain types. What a class missing from
    ``y_true`` leaves undefined (its sensitivity or specificity, ROC AUC) is None. At least one
    sample: there is nothing to summarise in none."""
    y_true = np.asarray(y_true, dtype=int)
    probs = np.asarray(probs, dtype=np.float64)
    n = int(len(y_true))
    if n == 0:
        raise ValueError("classification_summary: no samples")
    y_pred = classify(probs, classes, threshold)
    pos = list(classes).index(positive)
    cm = confusion_matrix(y_true, y_pred, len(classes))
    report = classification_report(cm, classes)
    correct = int(np.trace(cm))
    out: dict[str, Any] = {
        "n": n,
        "correct": correct,
        "accuracy": correct / n,
        "accuracy_ci95": list(wilson_interval(correct, n)),
        "threshold": threshold,
        "positive_class": positive,
        "confusion_matrix": cm.tolist(),
        "classes": list(classes),
    }
    if len(classes) == 2:
        # None with no image of the group (one labelled image, a one-class folder): not 0.000
        out["sensitivity"], out["specificity"] = sensitivity_specificity(y_true, y_pred, pos)
        out["f1"] = report["macro avg"]["f1-score"]
        out["f1_positive"] = report[classes[pos]]["f1-score"]
        out["roc_auc"] = roc_auc(y_true == pos, probs[:, pos])
    out["report"] = report
    return out


def metrics_file(predictions: str | Path) -> Path:
    """Where the metrics of a labelled run go: beside its predictions file (``p.csv`` ->
    ``p.metrics.json``)."""
    predictions = Path(predictions)
    return predictions.with_name(predictions.stem + ".metrics.json")


def format_accuracy(summary: dict[str, Any]) -> str:
    lo, hi = summary["accuracy_ci95"]
    return f"{summary['accuracy']:.3f} (95% CI {lo:.3f}–{hi:.3f}, n={summary['n']})"
