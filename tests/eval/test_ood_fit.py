"""Fitting the OOD gate: the threshold's exact guarantee, the published estimators, the choice
among the scores, and the parity gate's OOD decisions."""

import numpy as np
import pytest

from bonedeploy.errors import ConfigError, DataError
from bonedeploy.eval import ood
from bonedeploy.eval.parity import OODCheck, check_gate, compare
from onnxkit import tiny_ood_card


def test_threshold_is_the_conformal_order_statistic():
    s = np.arange(1.0, 200.0)  # 199 scores: k = ceil(200 * 0.99) = 198
    c = ood.choose_threshold(s, 0.01)
    assert (c.k, c.n, c.threshold) == (198, 199, 198.0)
    assert c.expected_fpr == pytest.approx(2 / 200) and c.expected_fpr <= 0.01 < c.fpr_upper95


def test_below_the_minimum_the_largest_score_is_the_threshold_and_the_gate_says_what_it_costs():
    c = ood.choose_threshold(np.arange(40.0), 0.01)
    assert c.threshold == 39.0 and c.expected_fpr == pytest.approx(1 / 41)
    assert ood.min_images(0.01) == 99 and ood.min_images(0.05) == 19


def test_the_flagged_share_on_new_images_is_what_the_threshold_promises():
    """Exchangeable scores: the mean share of new images above the k-th of n is (n + 1 - k) / (n + 1)."""
    rng = np.random.default_rng(0)
    shares = []
    for _ in range(2000):
        c = ood.choose_threshold(rng.random(40), 0.05)  # k = 39
        shares.append(np.mean(rng.random(200) > c.threshold))
    assert np.mean(shares) == pytest.approx(c.expected_fpr, abs=0.003)
    assert np.mean(np.array(shares) > c.fpr_upper95) == pytest.approx(0.05, abs=0.015)


def test_ledoit_wolf_and_auroc_agree_with_scikit_learn():
    sk_cov = pytest.importorskip("sklearn.covariance")
    from sklearn.metrics import roc_auc_score

    r = np.random.default_rng(1).normal(size=(30, 50))
    cov, shrink = ood.ledoit_wolf(r)
    want, want_shrink = sk_cov.ledoit_wolf(r, assume_centered=True)
    assert shrink == pytest.approx(want_shrink, rel=1e-6)
    np.testing.assert_allclose(cov, want, rtol=1e-6, atol=1e-9)
    a, b = np.r_[0.1, 0.4, 0.4, 0.8], np.r_[0.4, 0.9, 0.3]
    assert ood.auroc(a, b) == pytest.approx(roc_auc_score([0] * 4 + [1] * 3, np.r_[a, b]))
    assert ood.fpr_at_tpr(np.arange(100.0), np.arange(50.0, 150.0)) == pytest.approx(0.45)


def _scored(features, logits=None, spread=None):
    n = len(features)
    logits = np.zeros((n, 2)) if logits is None else logits
    return ood.Scored(np.asarray(logits, np.float32), np.asarray(features, np.float32),
                      np.ones(n, np.float32) if spread is None else spread)


def test_the_score_that_misses_least_is_chosen_and_every_score_is_kept():
    """Confident logits everywhere (energy cannot tell), features that can: a feature score wins."""
    rng = np.random.default_rng(2)
    inside = lambda n: rng.normal(5, 1, (n, 8))  # noqa: E731
    confident = np.tile([[30.0, -30.0]], (40, 1))
    probes = {"far": _scored(rng.normal(20, 1, (10, 8)), confident[:10])}
    fit = ood.fit_ood(_scored(inside(60), confident[:40].repeat(2, 0)[:60]), np.r_[np.zeros(30), np.ones(30)],
                      _scored(inside(40), confident), probes, 0.05, feature_layer="x", fitted_on="train",
                      threshold_on="val", min_std=1e-3)
    rows = {r["method"]: r for r in fit.gate.comparison}
    assert set(rows) == {"energy", "mahalanobis-sqrt", "mahalanobis", "knn"}
    assert rows["energy"]["auroc_min"] == pytest.approx(0.5) and not rows["energy"]["chosen"]
    chosen = [r for r in rows.values() if r["chosen"]]
    assert len(chosen) == 1 and chosen[0]["auroc_min"] == 1.0 and chosen[0]["method"].startswith("mahalanobis")
    # 40 threshold images meet 5% (19 needed): the 39th smallest validation score, no warning
    assert fit.gate.n_images == 40 and not fit.gate.below_minimum and not fit.notes
    assert fit.gate.threshold == pytest.approx(np.sort(fit.val_scores)[38])


def test_without_features_only_the_logit_score_competes_and_the_card_says_why():
    rng = np.random.default_rng(3)
    train = ood.Scored(rng.normal(size=(20, 2)).astype(np.float32), None, np.ones(20, np.float32))
    fit = ood.fit_ood(train, np.r_[np.zeros(10), np.ones(10)], train, {}, 0.1, feature_layer=None,
                      fitted_on="t", threshold_on="v", min_std=1e-3, no_features="no rule for family 'x'")
    assert fit.gate.method == "energy" and fit.gate.feature_layer is None
    assert [r["method"] for r in fit.gate.comparison] == ["energy"]
    assert any("no rule for family" in n for n in fit.notes)


@pytest.mark.parametrize("fpr", [0, -0.1, 0.9])
def test_an_impossible_target_is_refused(fpr):
    with pytest.raises(ConfigError, match="--ood-fpr"):
        ood.validate_fpr(fpr)


def test_halves_are_stratified_and_disjoint():
    labels = np.array([0] * 7 + [1] * 4)
    a, b = ood.halves(labels)
    assert not set(a) & set(b) and len(a) + len(b) == 11
    assert sorted(labels[a].tolist()) == [0] * 4 + [1] * 2
    with pytest.raises(DataError, match="two halves"):
        ood.halves(np.array([0]))


def _parity(ref_scores, cand_scores):
    logits = np.zeros((len(ref_scores), 2))
    gate = tiny_ood_card(threshold=10.0).ood
    names = [f"i{k}.png" for k in range(len(ref_scores))]
    check = OODCheck(gate, np.asarray(ref_scores, float), None if cand_scores is None else np.asarray(cand_scores, float), names)
    return compare(logits, logits, names, ("Fractured", "Normal"), ood=check)


def test_ood_flips_near_the_threshold_are_reported_but_tolerated():
    ref = [1.0] * 60 + [10.0, 30.0]
    res = _parity(ref, [1.0] * 60 + [10.2, 30.0])  # the threshold image moves by 2%
    assert len(res.ood_flips) == 1 and res.ood_flips[0]["near_threshold"] and res.ood_flips_away == 0
    assert not check_gate(res, "int8")


def test_ood_flips_away_from_the_threshold_fail_the_gate():
    ref = [1.0] * 40 + [50.0] * 10
    res = _parity(ref, [1.0] * 40 + [5.0] * 2 + [50.0] * 8)  # two refusals lost: 4% > 2%
    fails = [f for f in check_gate(res, "fp16") if "OOD" in f]
    assert res.ood_agreement == pytest.approx(0.96) and fails and "2 of 50" in fails[0]


def test_a_candidate_without_the_score_fails_when_the_card_has_a_gate():
    res = _parity([1.0, 2.0], None)
    assert any("computes no ood_score" in f for f in check_gate(res, "fp32"))
