"""Temperature scaling lowers NLL and ECE on an over-confident model; below the minimum set sizes
T stays 1 (and the operating point unset) with the reason, a target is refused and ``--force``
is recorded; ``calibrate`` stores the fit in the checkpoint's card (atomically, with history)."""

from __future__ import annotations

import numpy as np
import pytest

from bonedeploy.artefacts.card import ModelCard
from bonedeploy.eval.calibration import (apply_fit, brier, calibration_figures, expected_calibration_error,
                                         fit_decision, fit_temperature, nll, plot_reliability)
from bonedeploy.eval.decision import DecisionRule
from bonedeploy.eval.set_size import MIN_OPERATING_POINT_POSITIVES, MIN_TEMPERATURE_PER_CLASS

CLASSES = ("Fractured", "Normal")


def overconfident(n: int = 600, scale: float = 6.0, seed: int = 0):
    """Labels drawn from softmax(z) (a calibrated model), reported as ``scale * z``: the true
    temperature is ``scale``."""
    rng = np.random.default_rng(seed)
    z = rng.normal(0, 1.2, (n, 1)) * np.array([[1.0, -1.0]])
    p = np.exp(z) / np.exp(z).sum(1, keepdims=True)
    y = (rng.random(n) > p[:, 0]).astype(int)  # class 0 with probability p[:, 0]
    return z * scale, y


def test_temperature_scaling_lowers_nll_and_ece_on_an_overconfident_model():
    logits, y = overconfident()
    t = fit_temperature(logits, y)
    assert 4.0 < t < 8.5  # near the true 6
    figs = calibration_figures(logits, y, t, CLASSES)
    assert figs["after"]["nll"] < figs["before"]["nll"] - 0.1
    assert figs["after"]["ece"] < figs["before"]["ece"] / 2
    assert figs["after"]["brier"] < figs["before"]["brier"]
    # the fitted T is a minimum of the NLL
    assert nll(logits, y, t) <= min(nll(logits, y, t * 0.9), nll(logits, y, t * 1.1))


def test_temperature_leaves_the_argmax_alone():
    logits, _ = overconfident(50)
    a = DecisionRule(CLASSES, 1.0).apply(logits)[1]
    b = DecisionRule(CLASSES, 7.3).apply(logits)[1]
    assert (a == b).all()


def test_ece_and_brier_by_hand():
    probs = np.array([[0.9, 0.1], [0.9, 0.1], [0.6, 0.4], [0.2, 0.8]])
    y = np.array([0, 1, 0, 1])
    # bins: 0.9 -> acc 0.5 (2 images), 0.6 -> acc 1, 0.8 -> acc 1
    assert expected_calibration_error(probs, y) == pytest.approx(0.5 * 0.4 + 0.25 * 0.4 + 0.25 * 0.2)
    assert brier(probs, y) == pytest.approx(np.mean([0.02, 1.62, 0.32, 0.08]))


def test_perfectly_separated_split_keeps_a_bounded_temperature():
    logits = np.array([[9.0, -9.0], [-8.0, 8.0]] * 5)
    y = np.array([0, 1] * 5)
    assert 0.05 <= fit_temperature(logits, y) <= 20.0


def test_fit_decision_chooses_the_threshold_on_calibrated_probabilities():
    logits, y = overconfident(300, seed=2)
    fit = fit_decision(logits, y, CLASSES, 0.9, "test split")
    rule = DecisionRule(CLASSES, fit.temperature, fit.operating_point.threshold, "operating point")
    pred = rule.apply(logits)[1]
    assert ((pred == 0) & (y == 0)).sum() / (y == 0).sum() >= 0.9
    assert fit.operating_point.chosen_on == "test split" and fit.calibration["n"] == 300


def test_reliability_diagram_is_a_png(tmp_path):
    logits, y = overconfident(100)
    path = plot_reliability(logits, y, 5.0, CLASSES, tmp_path / "rel.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_a_split_below_the_temperature_minimum_keeps_t_1_and_says_why():
    logits, y = overconfident(10, seed=3)  # the 10-image split of issue 23
    fit = fit_decision(logits, y, CLASSES, None, "the validation split (10 images of data)")
    counts = f"{(y == 0).sum()} Fractured and {(y == 1).sum()} Normal images"
    assert fit.temperature == 1.0 and fit.operating_point is None and not fit.temperature_fitted
    [note] = fit.notes()
    assert "T = 1 kept" in note and counts in note and f"at least {MIN_TEMPERATURE_PER_CLASS}" in note
    assert "the validation split (10 images of data)" in note and "calibration_min_set.py" in note
    assert fit.calibration["fitted"] is False and fit.calibration["before"] == fit.calibration["after"]


def test_the_minimum_is_of_each_class():
    """At the minimum of each class T is fitted; one image short in either class, it is not."""
    logits, y = overconfident(4 * MIN_TEMPERATURE_PER_CLASS, seed=4)
    keep = np.r_[np.flatnonzero(y == 0)[:MIN_TEMPERATURE_PER_CLASS], np.flatnonzero(y == 1)[:MIN_TEMPERATURE_PER_CLASS]]
    at = fit_decision(logits[keep], y[keep], CLASSES, None, "s")
    assert at.temperature_fitted and at.notes() == [] and at.operating_point.is_argmax
    assert at.temperature == pytest.approx(fit_temperature(logits[keep], y[keep]))
    short = fit_decision(logits[keep[1:]], y[keep[1:]], CLASSES, None, "s")
    assert not short.temperature_fitted and short.temperature == 1.0


def test_a_target_on_too_few_positives_is_refused_and_force_records_it():
    from bonedeploy.errors import DataError

    logits, y = overconfident(600, seed=5)
    keep = np.r_[np.flatnonzero(y == 0)[:MIN_OPERATING_POINT_POSITIVES - 1], np.flatnonzero(y == 1)[:200]]
    with pytest.raises(DataError) as e:
        fit_decision(logits[keep], y[keep], CLASSES, 0.95, "calib/", way_out="Pass --data DIR")
    msg = str(e.value)
    assert f"calib/ has {MIN_OPERATING_POINT_POSITIVES - 1} Fractured images" in msg
    assert f"at least {MIN_OPERATING_POINT_POSITIVES} Fractured" in msg and "--data DIR" in msg and "--force" in msg
    forced = fit_decision(logits[keep], y[keep], CLASSES, 0.95, "calib/", force=True)
    assert forced.forced == ("temperature", "operating point")  # 29 positives: T is short too
    assert forced.operating_point.fitted_below_minimum and "--force" in forced.operating_point.describe()
    card = apply_fit(ModelCard(model="m"), forced)
    assert card.fitted_below_minimum == ("temperature", "operating point")
    assert ModelCard.from_props(card.to_props()).fitted_below_minimum == card.fitted_below_minimum


def test_enough_positives_choose_the_operating_point_even_when_t_stays_1():
    logits, y = overconfident(600, seed=6)
    keep = np.r_[np.flatnonzero(y == 0)[:MIN_OPERATING_POINT_POSITIVES], np.flatnonzero(y == 1)[:40]]
    fit = fit_decision(logits[keep], y[keep], CLASSES, 0.9, "s")
    assert fit.temperature == 1.0 and fit.operating_point.threshold is not None
    assert not fit.operating_point.fitted_below_minimum and fit.forced == ()
    assert "T = 1 kept)" in fit.notes()[0]  # not "no operating point set"
    card = apply_fit(ModelCard(model="m"), fit)
    assert card.operating_point == fit.operating_point and card.temperature == 1.0 and card.calibration is None


def test_a_fit_that_sets_nothing_leaves_the_card_alone():
    logits, y = overconfident(10, seed=3)
    card = ModelCard(model="m")
    assert apply_fit(card, fit_decision(logits, y, CLASSES, None, "s")) is card


def run_cli(args: list[str]) -> None:
    from bonedeploy.cli.app import main

    with pytest.raises(SystemExit) as e:
        main(args)
    assert e.value.code in (0, None)


# --- with torch: the calibrate command ---------------------------------------------------------
@pytest.fixture()
def checkpoint(tmp_path):
    pytest.importorskip("torch")
    from exportkit import make_checkpoint, make_tree

    tree = make_tree(tmp_path / "data", per_class=10)
    return make_checkpoint(tmp_path / "run" / "best.pt", data_root=tree), tree


def test_calibrate_refuses_a_small_split_before_writing_anything(checkpoint, capsys):
    from bonedeploy.cli.app import main

    ckpt, _ = checkpoint
    before = ckpt.read_bytes()
    with pytest.raises(SystemExit) as e:
        main(["calibrate", str(ckpt), "--target-sensitivity", "0.9"])
    err = capsys.readouterr().err
    assert e.value.code == 1 and err.startswith("error: "), err
    err = " ".join(err.split())  # the console wraps the one message
    assert "the checkpoint's validation split" in err and "has 2 Fractured and 2 Normal images" in err
    assert f"at least {MIN_TEMPERATURE_PER_CLASS} images of each class" in err
    assert f"at least {MIN_OPERATING_POINT_POSITIVES} Fractured images" in err
    assert "--data DIR" in err and "--force" in err
    assert ckpt.read_bytes() == before and not (ckpt.parent / "calibration.md").exists()


def test_calibrate_in_place_keeps_the_old_values_in_history(checkpoint, tmp_path):
    from bonedeploy.artefacts.checkpoint import card_from_checkpoint, load_checkpoint
    ckpt, tree = checkpoint
    run_cli(["calibrate", str(ckpt), "--target-sensitivity", "0.9", "--force"])  # 4 images: forced
    first = card_from_checkpoint(load_checkpoint(ckpt))
    assert first.operating_point.target_sensitivity == 0.9 and first.history == ()
    assert first.operating_point.n == 4 and "validation split" in first.operating_point.chosen_on
    assert first.fitted_below_minimum == ("temperature", "operating point")
    assert first.operating_point.fitted_below_minimum
    assert first.calibration["after"]["nll"] <= first.calibration["before"]["nll"] + 1e-9
    assert (ckpt.parent / "reliability.png").is_file() and (ckpt.parent / "calibration.md").is_file()
    md = (ckpt.parent / "calibration.md").read_text()
    assert "same" in md and "fitted below the minimum (--force)" in md
    run_cli(["calibrate", str(ckpt), "--data", str(tree), "--force"])
    second = card_from_checkpoint(load_checkpoint(ckpt))
    assert second.operating_point.threshold is None and second.operating_point.n == 20
    assert second.fitted_below_minimum == ("temperature",)
    assert len(second.history) == 1
    old = second.history[0]
    assert old["operating_point"] == first.operating_point.to_dict()
    assert old["temperature"] == first.temperature
    assert old["fitted_below_minimum"] == ["temperature", "operating point"]
    assert not [p for p in ckpt.parent.iterdir() if p.name.endswith(".tmp")]


def test_calibrate_to_out_leaves_the_source_alone(checkpoint, tmp_path):
    from bonedeploy.artefacts.checkpoint import card_from_checkpoint, load_checkpoint
    ckpt, _ = checkpoint
    before = ckpt.read_bytes()
    run_cli(["calibrate", str(ckpt), "--target-sensitivity", "1.0", "--out", str(tmp_path / "cal" / "c.pt"),
             "--force"])
    assert ckpt.read_bytes() == before
    card = card_from_checkpoint(load_checkpoint(tmp_path / "cal" / "c.pt"))
    assert card.operating_point.sensitivity == 1.0


def test_calibrate_on_a_set_at_the_minimum_needs_no_force(checkpoint, tmp_path):
    from exportkit import make_tree

    from bonedeploy.artefacts.checkpoint import card_from_checkpoint, load_checkpoint

    ckpt, _ = checkpoint
    big = make_tree(tmp_path / "calib", per_class=MIN_TEMPERATURE_PER_CLASS, seed=1)
    run_cli(["calibrate", str(ckpt), "--data", str(big), "--target-sensitivity", "0.9"])
    card = card_from_checkpoint(load_checkpoint(ckpt))
    assert card.fitted_below_minimum == () and not card.operating_point.fitted_below_minimum
    assert card.calibration["fitted"] and card.calibration["n"] == 2 * MIN_TEMPERATURE_PER_CLASS
    assert card.operating_point.n_positive == MIN_TEMPERATURE_PER_CLASS
    assert "below the minimum" not in (ckpt.parent / "calibration.md").read_text()


def test_calibrate_without_the_split_images_says_what_to_do(checkpoint, tmp_path):
    import shutil

    from bonedeploy.errors import DataError
    from bonedeploy.eval.calibration import CalibrateConfig, calibrate_checkpoint

    ckpt, tree = checkpoint
    shutil.rmtree(tree)
    with pytest.raises(DataError, match="--data"):
        calibrate_checkpoint(CalibrateConfig(ckpt))


def test_calibration_runs_the_models_through_the_parity_loop(checkpoint, monkeypatch):
    """One batching loop for every artefact: calibration's logits come from ``backend_logits``."""
    from bonedeploy.artefacts.checkpoint import card_from_checkpoint, load_checkpoint, model_from_checkpoint
    from bonedeploy.eval import parity
    from bonedeploy.eval.calibration import model_logits

    calls = []
    real = parity.backend_logits
    monkeypatch.setattr(parity, "backend_logits", lambda b, x, **kw: calls.append(len(x)) or real(b, x, **kw))
    ckpt, _ = checkpoint
    raw = load_checkpoint(ckpt)
    card, model = card_from_checkpoint(raw), model_from_checkpoint(raw)
    x = np.random.default_rng(0).random((parity.PARITY_BATCH + 3, 1, 32, 32), dtype=np.float32)
    got = model_logits(model, card, x)
    assert calls == [len(x)] and got.shape == (len(x), 2)
    import torch

    with torch.no_grad():
        assert np.allclose(got, model.eval()(torch.from_numpy(x)).numpy(), atol=1e-5)
