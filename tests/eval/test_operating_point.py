"""Operating point: the threshold reaches the target on its split and no higher one does; the
stored operating point and temperature travel into ONNX metadata and the engine sidecar."""

from __future__ import annotations

import math

import numpy as np
import pytest

from bonedeploy.artefacts.card import ModelCard
from bonedeploy.errors import ConfigError, DataError
from bonedeploy.eval.decision import DecisionRule, is_positive, positive_scores, rule_for
from bonedeploy.artefacts.operating_point import OperatingPoint
from bonedeploy.eval.operating_point import (bootstrap_ci, choose_operating_point,
                                             choose_threshold, sensitivity_specificity)


def _scores(seed: int, n_pos: int, n_neg: int):
    rng = np.random.default_rng(seed)
    p = np.concatenate([rng.beta(5, 2, n_pos), rng.beta(2, 5, n_neg)]).round(6)
    return p, np.r_[np.ones(n_pos, bool), np.zeros(n_neg, bool)]


@pytest.mark.parametrize("target", [0.5, 0.8, 0.9, 0.95, 0.97, 1.0])
@pytest.mark.parametrize("seed,n_pos,n_neg", [(0, 37, 41), (1, 5, 30), (2, 200, 150)])
def test_threshold_reaches_the_target_and_no_higher_threshold_does(target, seed, n_pos, n_neg):
    p, pos = _scores(seed, n_pos, n_neg)
    t = choose_threshold(p, pos, target)
    sens, _ = sensitivity_specificity(p, pos, t)
    assert sens >= target
    higher = np.unique(p[p > t])  # every distinct higher candidate, and just above t
    for h in list(higher) + [np.nextafter(t, 1.0)]:
        assert sensitivity_specificity(p, pos, h)[0] < target, (t, h)


def test_ties_at_the_threshold_count_as_detected():
    p = np.array([0.9, 0.7, 0.7, 0.7, 0.2, 0.1])
    pos = np.array([1, 1, 1, 1, 0, 0], bool)
    assert choose_threshold(p, pos, 0.5) == 0.7  # 2 of 4 needed; the 3 tied at 0.7 all pass


def test_operating_point_records_figures_and_intervals():
    p, pos = _scores(3, 40, 40)
    op = choose_operating_point(p, pos, "Fractured", 0.9, chosen_on="val")
    assert op.n == 80 and op.n_positive == 40 and op.target_sensitivity == 0.9
    sens, spec = sensitivity_specificity(p, pos, op.threshold)
    assert op.sensitivity == sens and op.specificity == spec
    (sl, sh), (pl, ph) = op.sensitivity_ci95, op.specificity_ci95
    assert sl <= sens <= sh and pl <= spec <= ph and sh - sl > 0 and ph - pl > 0
    assert OperatingPoint.from_dict(op.to_dict()) == op


def test_bootstrap_interval_narrows_with_more_images():
    small, big = _scores(4, 20, 20), _scores(4, 2000, 2000)
    w = [np.subtract(*bootstrap_ci(p, pos, 0.5)[0][::-1]) for p, pos in (small, big)]
    assert w[1] < w[0] / 4


def test_without_a_target_the_operating_point_is_argmax():
    p, pos = _scores(5, 10, 10)
    op = choose_operating_point(p, pos, "Fractured", None)
    assert op.threshold is None and op.is_argmax
    card = ModelCard(model="m", operating_point=op, temperature=2.0)
    rule = rule_for(card)
    assert rule.threshold is None and rule.source == "argmax" and rule.temperature == 2.0


def test_bad_targets_and_sets_are_refused():
    with pytest.raises(ConfigError, match="target-sensitivity"):
        choose_threshold([0.5], [True], 1.5)
    with pytest.raises(DataError, match="no positive"):
        choose_threshold([0.5, 0.2], [False, False], 0.9)


def test_rule_uses_temperature_threshold_and_override():
    op = OperatingPoint("Fractured", threshold=0.3, target_sensitivity=0.95)
    card = ModelCard(model="m", operating_point=op, temperature=4.0)
    logits = np.array([[2.0, 0.0], [-1.0, 1.0], [0.0, 0.0]])
    rule = rule_for(card)
    probs, pred = rule.apply(logits)
    z = logits / 4.0
    expect = np.exp(z) / np.exp(z).sum(1, keepdims=True)
    assert np.allclose(probs, expect, atol=1e-6) and rule.source == "operating point"
    assert list(pred) == [0 if p >= 0.3 else 1 for p in probs[:, 0]] == [0, 0, 0]
    over = rule_for(card, threshold=0.7)
    assert over.source == "--threshold" and list(over.apply(logits)[1]) == [1, 1, 1]
    assert np.allclose(positive_scores(rule, logits), probs[:, 0])
    assert list(is_positive([0, 1, 0], rule)) == [True, False, True]


def _fitted_card() -> ModelCard:
    p, pos = _scores(6, 12, 12)
    op = choose_operating_point(p, pos, "Fractured", 0.95, chosen_on="the validation split")
    return ModelCard(model="tiny", operating_point=op, temperature=1.8731,
                     calibration={"temperature": 1.8731, "n": 24, "before": {"nll": 0.9}},
                     history=({"temperature": 1.0, "operating_point": None, "calibration": None},))


def test_operating_point_and_temperature_survive_onnx_metadata(tmp_path):
    pytest.importorskip("onnx")
    from onnxkit import tiny_card, tiny_onnx_classifier

    from bonedeploy.backends import open_backend

    fitted = _fitted_card()
    card = tiny_card(operating_point=fitted.operating_point, temperature=fitted.temperature,
                     calibration=fitted.calibration, history=fitted.history)
    path = tiny_onnx_classifier(tmp_path / "m.onnx", card)
    with open_backend(path) as backend:
        got = backend.card
    assert got.operating_point == fitted.operating_point
    assert got.temperature == fitted.temperature and got.calibration == fitted.calibration
    assert got.history == fitted.history
    assert rule_for(got).threshold == fitted.operating_point.threshold


def test_operating_point_and_temperature_survive_the_sidecar(tmp_path):
    from bonedeploy.artefacts.sidecar import build_sidecar, card_from_sidecar, read_sidecar, write_sidecar

    card = _fitted_card()
    engine = tmp_path / "model.trt"
    engine.write_bytes(b"x")
    write_sidecar(engine, build_sidecar({"tensorrt": "10"}, card, {}, "model.onnx", "0" * 64, "now"))
    got = card_from_sidecar(read_sidecar(engine))
    assert got == card and math.isclose(got.temperature, 1.8731)


def test_fp16_and_int8_cards_keep_the_decision():
    card = _fitted_card()
    for prec in ("fp16", "int8"):
        c = ModelCard.from_props(card.with_(precision=prec).to_props())
        assert c.operating_point == card.operating_point and c.temperature == card.temperature


# --- infer decides at the stored operating point ------------------------------------------------
def _infer_setup(tmp_path, threshold=0.42, temperature=3.0):
    pytest.importorskip("onnx")
    from PIL import Image

    from onnxkit import tiny_card, tiny_onnx_classifier

    op = OperatingPoint("Fractured", threshold=threshold, target_sensitivity=0.95)
    model = tiny_onnx_classifier(tmp_path / "m.onnx", tiny_card(operating_point=op, temperature=temperature))
    imgs = tmp_path / "imgs"
    rng = np.random.default_rng(0)
    for cls in ("Fractured", "Normal"):
        (imgs / cls).mkdir(parents=True)
        for i in range(12):
            level = int(rng.integers(90, 170))
            Image.fromarray(np.full((36, 36), level, np.uint8)).save(imgs / cls / f"{i}.png")
    (imgs / "Normal" / "broken.png").write_bytes(b"not a png")
    return model, imgs


def _rows(path):
    import csv

    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_infer_decides_at_the_stored_operating_point_with_the_stored_temperature(tmp_path):
    import json

    from onnxkit import tiny_logits

    from bonedeploy.data.imageio import load_preprocessed
    from bonedeploy.infer.run import InferConfig, run_inference, run_record_path

    model, imgs = _infer_setup(tmp_path)
    out = tmp_path / "p.csv"
    result = run_inference(InferConfig(engine=model, inputs=(imgs,), out=out, workers=0))
    rows = _rows(out)
    ok = [r for r in rows if r["status"] == "ok"]
    assert len(ok) == 24 and len(rows) == 25 and result.errors  # the broken file has its row
    for r in ok:
        p = float(r["p_Fractured"])
        assert r["predicted"] == ("Fractured" if p >= 0.42 else "Normal"), r
    # the probabilities are the calibrated ones: softmax(logits / T)
    from bonedeploy.data.preprocess import PreprocessSpec

    spec = PreprocessSpec(crop_size=32)
    for r in ok:
        z = tiny_logits(load_preprocessed(r["path"], spec)[None])[0] / 3.0
        assert abs(float(r["p_Fractured"]) - 1 / (1 + np.exp(z[1] - z[0]))) < 2e-6
    # some rows sit between 0.42 and 0.5: the operating point, not argmax, decided them
    assert any(0.42 <= float(r["p_Fractured"]) < 0.5 for r in ok)
    record = json.loads(run_record_path(out).read_text())["decision"]
    assert record["threshold"] == 0.42 and record["threshold_source"] == "operating point"
    assert record["temperature"] == 3.0
    assert result.metrics["threshold"] == 0.42 and result.metrics["threshold_source"] == "operating point"


def test_infer_threshold_overrides_the_operating_point(tmp_path):
    import json

    from bonedeploy.infer.run import InferConfig, run_inference, run_record_path

    model, imgs = _infer_setup(tmp_path)
    out = tmp_path / "p.csv"
    run_inference(InferConfig(engine=model, inputs=(imgs,), out=out, workers=0, threshold=0.55))
    ok = [r for r in _rows(out) if r["status"] == "ok"]
    assert all(r["predicted"] == ("Fractured" if float(r["p_Fractured"]) >= 0.55 else "Normal") for r in ok)
    record = json.loads(run_record_path(out).read_text())["decision"]
    assert record["threshold"] == 0.55 and record["threshold_source"] == "--threshold"


# --- parity at the operating point ------------------------------------------------------------------
def _logits_for(p_pos: np.ndarray) -> np.ndarray:
    """Logits whose softmax gives p(Fractured) = p_pos (T = 1)."""
    z = np.log(p_pos) - np.log1p(-p_pos)
    return np.stack([z, np.zeros_like(z)], axis=1)


def _rule(threshold):
    return DecisionRule(("Fractured", "Normal"), 1.0, threshold, "operating point")


def test_parity_reports_figures_and_flips_at_the_stored_threshold():
    from bonedeploy.eval.parity import check_gate, compare

    p = np.array([0.9, 0.35, 0.32, 0.2, 0.1, 0.05])
    y = np.array([0, 0, 0, 1, 1, 1])
    cand = p.copy()
    cand[2] = 0.29  # a positive falls below 0.3: same argmax, different decision at the operating point
    paths = [f"img{i}.png" for i in range(6)]
    res = compare(_logits_for(p), _logits_for(cand), paths, ("Fractured", "Normal"), labels=y,
                  decision=_rule(0.3))
    assert res.top1_agreement == 1.0  # argmax agreement alone would call this perfect
    assert [f["path"] for f in res.op_flips] == ["img2.png"] and res.op_agreement == pytest.approx(5 / 6)
    assert res.op_sensitivity_ref == 1.0 and res.op_sensitivity_cand == pytest.approx(2 / 3)
    assert res.op_specificity_ref == res.op_specificity_cand == 1.0
    assert res.op_missed_positives == 1 and res.decision["threshold"] == 0.3
    failures = check_gate(res, "int8")
    assert any("img2.png" in f and "small set" in f for f in failures), failures
    same = compare(_logits_for(p), _logits_for(p), paths, ("Fractured", "Normal"), labels=y, decision=_rule(0.3))
    assert check_gate(same, "int8") == [] and same.op_missed_positives == 0


def test_large_sets_fail_only_beyond_two_points_of_sensitivity():
    from bonedeploy.eval.parity import check_gate, compare

    rng = np.random.default_rng(0)
    n = 200
    p = np.r_[rng.uniform(0.5, 0.99, n), rng.uniform(0.01, 0.3, n)]
    y = np.r_[np.zeros(n, int), np.ones(n, int)]
    paths = [str(i) for i in range(2 * n)]

    def drop(k):
        cand = p.copy()
        cand[:k] = 0.4  # k detected positives now missed at 0.45
        return compare(_logits_for(p), _logits_for(cand), paths, ("Fractured", "Normal"), labels=y,
                       decision=_rule(0.45))

    ok, bad = drop(4), drop(5)  # 4/200 = 2.0 points, 5/200 = 2.5 points
    assert ok.op_sensitivity_delta == pytest.approx(-0.02) and not [f for f in check_gate(ok, "int8")
                                                                    if "sensitivity" in f]
    assert any("sensitivity at p(Fractured) >= 0.45 drops 2.5 pt" in f for f in check_gate(bad, "int8"))


def test_serve_models_use_the_shared_calibrated_probabilities(tmp_path):
    pytest.importorskip("onnx")
    from onnxkit import tiny_card, tiny_logits, tiny_onnx_classifier

    from bonedeploy.backends import open_backend
    from bonedeploy.serve.python_model import TensorModel

    op = OperatingPoint("Fractured", threshold=0.4, target_sensitivity=0.9)
    path = tiny_onnx_classifier(tmp_path / "m.onnx", tiny_card(operating_point=op, temperature=2.5))
    model = TensorModel()
    model.backend = open_backend(path).load()
    model.card, model.classes = model.backend.card, list(model.backend.card.classes)
    x = np.random.default_rng(0).random((5, 1, 32, 32), dtype=np.float32)
    logits, probs, scores = model._predict(x)
    assert np.isnan(scores).all()  # the tiny graph computes no ood_score
    assert np.allclose(probs, rule_for(model.card).probabilities(tiny_logits(x)), atol=1e-6)
    z = tiny_logits(x) / 2.5
    assert np.allclose(probs[:, 0], 1 / (1 + np.exp(z[:, 1] - z[:, 0])), atol=1e-6)
    model.finalize()


def test_parity_summary_line_names_the_flips():
    from bonedeploy.eval.operating_point import summarise_parity
    from bonedeploy.eval.parity import compare

    p = np.array([0.9, 0.35, 0.32, 0.2])
    cand = np.array([0.9, 0.35, 0.29, 0.2])
    res = compare(_logits_for(p), _logits_for(cand), ["a.png", "b.png", "c.png", "d.png"],
                  ("Fractured", "Normal"), labels=np.array([0, 0, 0, 1]), decision=_rule(0.3))
    line = summarise_parity("model.int8.onnx", res.to_dict())
    assert line == ("model.int8.onnx at p(Fractured) >= 0.3: sensitivity 1.000 -> 0.667, specificity "
                    "1.000 -> 1.000, 1 decision flip(s) (c.png), argmax agreement 100.0%")
