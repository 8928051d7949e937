"""The one softmax, sensitivity/specificity and summary that reports, infer, bench and the gate use:
numpy, held to scikit-learn's and scipy's results (the definitions they replace)."""

import math

import numpy as np
import pytest

from bonedeploy.eval import metrics


def test_softmax_dtype_follows_the_caller_and_rows_sum_to_one():
    z = np.array([[1000.0, 1000.0 + 1e-6], [0.0, np.log(3.0)]])
    p32, p64 = metrics.softmax(z), metrics.softmax(z, np.float64)
    assert p32.dtype == np.float32 and p64.dtype == np.float64
    assert np.allclose(p64.sum(axis=1), 1.0) and p64[1].tolist() == pytest.approx([0.25, 0.75])
    # large logits: the max is subtracted first, so nothing overflows
    assert p64[0, 1] - p64[0, 0] == pytest.approx(5e-7, rel=1e-3)


def test_sensitivity_specificity_one_vs_rest():
    y_true = [0, 0, 0, 1, 1, 2]
    y_pred = [0, 1, 0, 1, 0, 2]
    sens, spec = metrics.sensitivity_specificity(y_true, y_pred, positive_index=0)
    assert sens == pytest.approx(2 / 3)
    assert spec == pytest.approx(2 / 3)  # of 1, 1, 2: the second 1 was called positive


def test_an_empty_group_is_undefined_unless_told_otherwise():
    assert metrics.sensitivity_specificity([1, 1], [0, 1], 0) == (None, 0.5)
    assert metrics.sensitivity_specificity([1, 1], [0, 1], 0, zero_division=0.0) == (0.0, 0.5)


def test_classification_summary_agrees_with_the_shared_function():
    pytest.importorskip("sklearn")
    y = [0, 0, 1, 1, 1]
    probs = np.array([[0.9, 0.1], [0.4, 0.6], [0.2, 0.8], [0.7, 0.3], [0.1, 0.9]])
    s = metrics.classification_summary(y, probs, ("Fractured", "Normal"))
    assert (s["sensitivity"], s["specificity"]) == pytest.approx((0.5, 2 / 3))


# --- The numpy metrics against scikit-learn and scipy (the definitions they replace) -------------

def _flat(report):
    """{(key, field): value}: pytest.approx compares flat mappings only."""
    return {(k, f): x for k, v in report.items() for f, x in (v.items() if isinstance(v, dict) else [("", v)])}


def _random_sets(count=300, seed=0):
    """Label sets of 1..40 samples, 2 or 3 classes, with and without ties in the scores; every
    tenth with one class only, every seventh all correct."""
    rng = np.random.default_rng(seed)
    for i in range(count):
        n, k = int(rng.integers(1, 41)), 2 if i % 3 else 3
        y = rng.integers(0, 1 if i % 10 == 0 else k, n)
        logits = rng.normal(size=(n, k))
        if i % 4 == 0:
            logits = np.round(logits, 1)  # ties between scores
        probs = metrics.softmax(logits, np.float64)
        if i % 7 == 0:
            probs = np.eye(k)[y] * 0.8 + 0.2 / k  # all correct
        yield y, probs, k


def test_wilson_interval_is_scipys_binomtest():
    binomtest = pytest.importorskip("scipy.stats").binomtest
    for n in (1, 2, 3, 7, 50, 1000):
        for k in sorted({0, 1, n // 2, n - 1, n}):
            for conf in (0.9, 0.95, 0.99):
                ci = binomtest(k, n).proportion_ci(confidence_level=conf, method="wilson")
                lo, hi = metrics.wilson_interval(k, n, conf)
                assert (lo, hi) == pytest.approx((ci.low, ci.high), rel=1e-12, abs=1e-15), (k, n, conf)
    assert metrics.wilson_interval(0, 5)[0] == 0.0 and metrics.wilson_interval(5, 5)[1] == 1.0
    for n in range(1, 120):  # the default 95% is scipy's to the last bit (its z is ndtri's)
        for k in range(n + 1):
            ci = binomtest(k, n).proportion_ci(method="wilson")
            assert metrics.wilson_interval(k, n) == (ci.low, ci.high), (k, n)


def test_wilson_interval_edges():
    assert all(math.isnan(v) for v in metrics.wilson_interval(0, 0))
    lo, hi = metrics.wilson_interval(1, 1)  # one correct image: known to be wide
    assert hi == 1.0 and lo == pytest.approx(0.20654931, abs=1e-8)
    with pytest.raises(ValueError, match="0..n"):
        metrics.wilson_interval(3, 2)


def test_confusion_matrix_report_f1_and_auc_are_scikit_learns():
    skm = pytest.importorskip("sklearn.metrics")
    for y, probs, k in _random_sets():
        classes = ["Fractured", "Normal", "Other"][:k]
        pred = probs.argmax(axis=1)
        labels = list(range(k))
        cm = metrics.confusion_matrix(y, pred, k)
        assert cm.tolist() == skm.confusion_matrix(y, pred, labels=labels).tolist()
        want = skm.classification_report(y, pred, labels=labels, target_names=classes,
                                         output_dict=True, zero_division=0)
        got = metrics.classification_report(cm, classes)
        assert list(got) == list(want) and _flat(got) == pytest.approx(_flat(want), rel=1e-12)
        s = metrics.classification_summary(y, probs, classes)
        assert s["accuracy"] == skm.accuracy_score(y, pred) and s["correct"] == int((y == pred).sum())
        if k == 2:
            assert s["f1"] == pytest.approx(skm.f1_score(y, pred, average="macro", labels=labels,
                                                         zero_division=0), rel=1e-12)
            assert s["f1_positive"] == pytest.approx(skm.f1_score(y == 0, pred == 0, zero_division=0), rel=1e-12)
            if len(np.unique(y)) == 2:
                assert s["roc_auc"] == pytest.approx(skm.roc_auc_score(y == 0, probs[:, 0]), rel=1e-12)
            else:
                assert s["roc_auc"] is None  # undefined with one class; scikit-learn raises


def test_summary_matches_scikit_learn_with_a_threshold_and_at_the_edges():
    skm = pytest.importorskip("sklearn.metrics")
    classes = ("Fractured", "Normal")
    cases = {
        "n=1, right": ([0], [[0.9, 0.1]]),
        "n=1, wrong": ([0], [[0.2, 0.8]]),
        "no positives": ([1, 1, 1], [[0.3, 0.7], [0.6, 0.4], [0.1, 0.9]]),
        "all correct": ([0, 1, 0, 1], [[0.9, 0.1], [0.2, 0.8], [0.7, 0.3], [0.4, 0.6]]),
        "all tied": ([0, 1, 1], [[0.5, 0.5]] * 3),
    }
    for name, (y, probs) in cases.items():
        probs = np.array(probs)
        for threshold in (None, 0.35):
            s = metrics.classification_summary(y, probs, classes, threshold)
            pred = metrics.classify(probs, classes, threshold)
            assert s["confusion_matrix"] == skm.confusion_matrix(y, pred, labels=[0, 1]).tolist(), name
            assert _flat(s["report"]) == pytest.approx(_flat(skm.classification_report(
                y, pred, labels=[0, 1], target_names=list(classes), output_dict=True, zero_division=0))), name
            for key, label in (("sensitivity", 0), ("specificity", 1)):  # undefined: None, not 0
                want = skm.recall_score(y, pred, pos_label=label) if label in y else None
                assert s[key] == (None if want is None else pytest.approx(want)), (name, key)
            want_auc = skm.roc_auc_score(np.equal(y, 0), probs[:, 0]) if len(set(y)) == 2 else None
            assert s["roc_auc"] == (pytest.approx(want_auc) if want_auc is not None else None), name
    one = metrics.classification_summary([0], np.array([[0.9, 0.1]]), classes)
    assert (one["sensitivity"], one["specificity"], one["roc_auc"]) == (1.0, None, None)


def test_summary_of_nothing_and_bad_scores_raise():
    with pytest.raises(ValueError, match="no samples"):
        metrics.classification_summary([], np.zeros((0, 2)), ("Fractured", "Normal"))
    with pytest.raises(ValueError, match="NaN"):
        metrics.roc_auc([0, 1], [0.2, float("nan")])
    with pytest.raises(ValueError, match="outside 0..1"):
        metrics.confusion_matrix([0, 2], [0, 1], 2)
