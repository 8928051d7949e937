"""The one softmax and the one sensitivity/specificity that reports, infer, bench and the gate use."""

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
