"""Temperature scaling lowers NLL and ECE on an over-confident model; ``calibrate`` and
``train --target-sensitivity`` store the fit in the checkpoint's card (atomically, with history)."""

from __future__ import annotations

import numpy as np
import pytest

from bonedeploy.eval.calibration import (brier, calibration_figures, expected_calibration_error,
                                         fit_decision, fit_temperature, nll, plot_reliability)
from bonedeploy.eval.decision import DecisionRule

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


def run_cli(args: list[str]) -> None:
    from bonedeploy.cli.app import main

    with pytest.raises(SystemExit) as e:
        main(args)
    assert e.value.code in (0, None)


# --- with torch: the calibrate command and train --target-sensitivity ------------------------
@pytest.fixture()
def checkpoint(tmp_path):
    pytest.importorskip("torch")
    from exportkit import make_checkpoint, make_tree

    tree = make_tree(tmp_path / "data", per_class=10)
    return make_checkpoint(tmp_path / "run" / "best.pt", data_root=tree), tree


def test_calibrate_in_place_keeps_the_old_values_in_history(checkpoint, tmp_path):
    from bonedeploy.artefacts.checkpoint import card_from_checkpoint, load_checkpoint
    ckpt, tree = checkpoint
    run_cli(["calibrate", str(ckpt), "--target-sensitivity", "0.9"])
    first = card_from_checkpoint(load_checkpoint(ckpt))
    assert first.operating_point.target_sensitivity == 0.9 and first.history == ()
    assert first.operating_point.n == 4 and "validation split" in first.operating_point.chosen_on
    assert first.calibration["after"]["nll"] <= first.calibration["before"]["nll"] + 1e-9
    assert (ckpt.parent / "reliability.png").is_file() and (ckpt.parent / "calibration.md").is_file()
    assert "same" in (ckpt.parent / "calibration.md").read_text()
    run_cli(["calibrate", str(ckpt), "--data", str(tree)])
    second = card_from_checkpoint(load_checkpoint(ckpt))
    assert second.operating_point.threshold is None and second.operating_point.n == 20
    assert len(second.history) == 1
    old = second.history[0]
    assert old["operating_point"] == first.operating_point.to_dict()
    assert old["temperature"] == first.temperature
    assert not [p for p in ckpt.parent.iterdir() if p.name.endswith(".tmp")]


def test_calibrate_to_out_leaves_the_source_alone(checkpoint, tmp_path):
    from bonedeploy.artefacts.checkpoint import card_from_checkpoint, load_checkpoint
    ckpt, _ = checkpoint
    before = ckpt.read_bytes()
    run_cli(["calibrate", str(ckpt), "--target-sensitivity", "1.0", "--out", str(tmp_path / "cal" / "c.pt")])
    assert ckpt.read_bytes() == before
    card = card_from_checkpoint(load_checkpoint(tmp_path / "cal" / "c.pt"))
    assert card.operating_point.sensitivity == 1.0


def test_calibrate_without_the_split_images_says_what_to_do(checkpoint, tmp_path):
    import shutil

    from bonedeploy.errors import DataError
    from bonedeploy.eval.calibration import CalibrateConfig, calibrate_checkpoint

    ckpt, tree = checkpoint
    shutil.rmtree(tree)
    with pytest.raises(DataError, match="--data"):
        calibrate_checkpoint(CalibrateConfig(ckpt))


def test_train_with_a_target_sensitivity_stores_the_operating_point(tmp_path):
    pytest.importorskip("torch")
    from trainkit import make_folder, register_tiny

    from bonedeploy.artefacts.checkpoint import card_from_checkpoint, load_checkpoint
    from bonedeploy.eval.decision import is_positive, positive_scores, rule_for
    from bonedeploy.eval.operating_point import sensitivity_specificity
    from bonedeploy.training import TrainConfig, train

    data = make_folder(tmp_path / "data", per_class=10)
    cfg = TrainConfig(model=register_tiny(), data=str(data), out=str(tmp_path / "run"), epochs=2,
                      batch_size=4, workers=1, device="cpu", deterministic=True, save_every=0.0)
    result = train(cfg, target_sensitivity=0.75)
    card = card_from_checkpoint(load_checkpoint(result.best_path))
    op = card.operating_point
    assert op.target_sensitivity == 0.75 and op.n == 4 and op.threshold is not None
    assert (result.out / "reliability.png").is_file()
    assert result.report["decision"]["temperature"] == card.temperature
    # on the split it was chosen on, the stored threshold reaches the target
    from bonedeploy.artefacts.checkpoint import model_from_checkpoint
    from bonedeploy.eval.calibration import calibration_inputs, model_logits

    ckpt = load_checkpoint(result.best_path)
    x, y, _ = calibration_inputs(ckpt, None, card, result.best_path)
    rule = rule_for(card)
    p = positive_scores(rule, model_logits(model_from_checkpoint(ckpt), card, x, result.best_path))
    assert sensitivity_specificity(p, is_positive(y, rule), op.threshold)[0] >= 0.75
