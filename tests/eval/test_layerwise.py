"""Layer-by-layer error arithmetic (numpy only): SQNR, local vs accumulated error, the channel view
that sees a crushed channel, the first layer below a tolerance, and where one image diverges."""

from __future__ import annotations

import math

import numpy as np
import pytest

from bonedeploy.eval.layerwise import (LOCAL_QDQ, ChannelNoise, LayerErrors, divergence, first_crossing,
                                       fp16_rounding, sqnr_db)


def test_sqnr_is_signal_over_noise_in_decibels():
    assert sqnr_db(100.0, 1.0) == pytest.approx(20.0)
    assert sqnr_db(1.0, 0.0) is None  # identical: no noise to measure
    assert sqnr_db(1.0, math.inf) == -math.inf  # an overflow
    assert sqnr_db(0.0, 1.0) == -math.inf


def test_layer_errors_accumulate_over_batches_per_layer_and_per_image():
    rng = np.random.default_rng(0)
    ref = {"a": rng.normal(size=(6, 3, 4, 4)), "b": rng.normal(size=(6, 5))}
    noise = {"a": 0.01 * rng.normal(size=(6, 3, 4, 4)), "b": 0.1 * rng.normal(size=(6, 5))}
    cand = {k: ref[k] + noise[k] for k in ref}
    errors = LayerErrors(["a", "b"])
    for i in (0, 3):  # two batches of three images
        errors.add({k: v[i:i + 3] for k, v in ref.items()}, {k: v[i:i + 3] for k, v in cand.items()},
                   {"a": (ref["a"][i:i + 3], cand["a"][i:i + 3], LOCAL_QDQ)})
    rows = errors.rows()
    for row, k in zip(rows, ("a", "b")):
        want = 10 * np.log10((ref[k] ** 2).sum() / (noise[k] ** 2).sum())
        assert row["layer"] == k and row["sqnr_db"] == pytest.approx(want)
        assert row["max_abs_err"] == pytest.approx(np.abs(noise[k]).max())
        assert row["mean_abs_err"] == pytest.approx(np.abs(noise[k]).mean())
        assert 0.99 < row["cosine"] <= 1.0
    assert rows[0]["local_source"] == LOCAL_QDQ and rows[0]["local_sqnr_db"] == pytest.approx(rows[0]["sqnr_db"])
    assert rows[1]["local_source"] is None and rows[1]["local_sqnr_db"] is None
    nsr = errors.image_nsr()
    assert nsr.shape == (6, 2)
    assert nsr[4, 1] == pytest.approx((noise["b"][4] ** 2).sum() / (ref["b"][4] ** 2).sum())
    one_by_one = LayerErrors(["a", "b"])  # layer-major order gives the same numbers
    for k in ("b", "a"):
        for i in (0, 3):
            one_by_one.add_layer(k, ref[k][i:i + 3], cand[k][i:i + 3])
    assert np.allclose(one_by_one.image_nsr(), nsr)


def test_a_nonfinite_candidate_is_an_overflow_not_a_crash():
    errors = LayerErrors(["x"])
    errors.add({"x": np.ones((2, 4))}, {"x": np.array([[1, 1, np.inf, 1], [1, 1, 1, 1.0]])})
    row = errors.rows()[0]
    assert row["sqnr_db"] == -math.inf and row["nonfinite_images"] == 1
    assert fp16_rounding(np.array([70000.0, 1.0]))[0] == np.inf


def test_channel_view_sees_the_channels_one_huge_channel_hides():
    x = np.ones((4, 8, 5, 5))
    x[:, 0] *= 1000.0  # the planted channel sets the int8 scale...
    scale = np.abs(x).max() / 127
    q = np.round(x / scale) * scale  # ...and the other seven round to zero
    ch = ChannelNoise()
    ch.add(x, q)
    assert 10 * np.log10((x ** 2).sum() / ((q - x) ** 2).sum()) > 40  # the tensor looks fine
    assert ch.nsr() == pytest.approx(7 / 8, abs=0.01) and ch.sqnr_db() < 1  # seven of eight are lost
    silent = ChannelNoise()
    silent.add(np.zeros((2, 3)), np.zeros((2, 3)))
    assert silent.nsr() == 0.0


def test_first_crossing_and_divergence_name_the_layer():
    rows = [{"layer": "0", "sqnr_db": 45.0}, {"layer": "1", "sqnr_db": None}, {"layer": "2", "sqnr_db": 12.0},
            {"layer": "3", "sqnr_db": -3.0}]
    assert first_crossing(rows, 20.0) == {"index": 2, "layer": "2", "sqnr_db": 12.0}
    assert first_crossing(rows, -10.0) is None
    nsr = np.array([1e-5, 1e-5, 0.9, 4.0])  # the error reaches the signal at "2"; "3" only scales it
    d = divergence(nsr, ["0", "1", "2", "3"])
    assert d["layer"] == "2" and d["sqnr_db_before"] == pytest.approx(50.0) and d["sqnr_db"] < 1
    assert divergence(np.array([0.0, np.inf]), ["0", "1"])["layer"] == "1"
    assert divergence(np.zeros(0), []) is None
