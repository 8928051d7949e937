"""Classification metrics shared by training reports, infer and bench (scikit-learn + scipy)."""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from bonedeploy import POSITIVE_CLASS


def wilson_interval(successes: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """Wilson score interval for a proportion (scipy's binomtest)."""
    if n == 0:
        return (float("nan"), float("nan"))
    from scipy.stats import binomtest

    ci = binomtest(int(successes), int(n)).proportion_ci(confidence_level=confidence, method="wilson")
    return (float(ci.low), float(ci.high))


def softmax(logits: np.ndarray, dtype: Any = np.float32) -> np.ndarray:
    """Row-wise softmax, computed in float64 and returned as ``dtype``: float32 for reports,
    float64 for the parity gate (the fp32 gate compares differences of ~1e-7)."""
    z = np.asarray(logits, dtype=np.float64)
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return (e / e.sum(axis=1, keepdims=True)).astype(dtype, copy=False)


def sensitivity_specificity(y_true: Sequence[int], y_pred: Sequence[int], positive_index: int,
                            zero_division: float | None = None) -> tuple[float | None, float | None]:
    """Recall of the positive class and of the rest (one-vs-rest beyond two classes). Numpy only:
    the parity gate runs on the base install. An empty group gives ``zero_division`` (None:
    undefined, not a number that looks measured)."""
    y_true, y_pred = np.asarray(y_true, dtype=int), np.asarray(y_pred, dtype=int)
    out = []
    for group in (y_true == positive_index, y_true != positive_index):
        if not group.any():
            out.append(zero_division)
            continue
        hits = (y_pred[group] == positive_index) == (y_true[group] == positive_index)
        out.append(float(hits.mean()))
    return out[0], out[1]


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
    ROC AUC, confusion matrix and sklearn's classification report, as plain types."""
    from sklearn.metrics import (
        accuracy_score,
        classification_report,
        confusion_matrix,
        f1_score,
        roc_auc_score,
    )

    y_true = np.asarray(y_true, dtype=int)
    probs = np.asarray(probs, dtype=np.float64)
    y_pred = classify(probs, classes, threshold)
    labels = list(range(len(classes)))
    pos = list(classes).index(positive)
    n = int(len(y_true))
    correct = int((y_pred == y_true).sum())
    out: dict[str, Any] = {
        "n": n,
        "correct": correct,
        "accuracy": float(accuracy_score(y_true, y_pred)) if n else float("nan"),
        "accuracy_ci95": list(wilson_interval(correct, n)),
        "threshold": threshold,
        "positive_class": positive,
        "confusion_matrix": confusion_matrix(y_true, y_pred, labels=labels).tolist(),
        "classes": list(classes),
    }
    if len(classes) == 2 and n:
        y_pos, p_pos = (y_true == pos).astype(int), (y_pred == pos).astype(int)
        out["sensitivity"], out["specificity"] = sensitivity_specificity(y_true, y_pred, pos, zero_division=0.0)
        out["f1"] = float(f1_score(y_true, y_pred, average="macro", labels=labels, zero_division=0))
        out["f1_positive"] = float(f1_score(y_pos, p_pos, pos_label=1, zero_division=0))
        both = len(np.unique(y_true)) == 2
        out["roc_auc"] = float(roc_auc_score(y_pos, probs[:, pos])) if both else None
    out["report"] = classification_report(
        y_true, y_pred, labels=labels, target_names=list(classes), output_dict=True, zero_division=0
    )
    return out


def format_accuracy(summary: dict[str, Any]) -> str:
    lo, hi = summary["accuracy_ci95"]
    return f"{summary['accuracy']:.3f} (95% CI {lo:.3f}–{hi:.3f}, n={summary['n']})"
