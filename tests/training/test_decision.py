"""What ``train`` fits on best.pt's validation logits: T = 1 with the reason below the minimum
set size (the 10-image split of issue 23), a target sensitivity refused before training on too
few positives, ``force_calibration`` recorded in the card, a fit without force at the minimum."""

from __future__ import annotations

import io
import json

import pytest

pytest.importorskip("torch")

from trainkit import make_folder, register_tiny  # noqa: E402

from bonedeploy.artefacts.checkpoint import card_from_checkpoint, load_checkpoint  # noqa: E402
from bonedeploy.errors import DataError  # noqa: E402
from bonedeploy.eval.set_size import MIN_OPERATING_POINT_POSITIVES, MIN_TEMPERATURE_PER_CLASS  # noqa: E402
from bonedeploy.training import LineReporter, TrainConfig, train  # noqa: E402


def cfg(data, out, **kw) -> TrainConfig:
    base = dict(model=register_tiny(), data=str(data), out=str(out), epochs=1, batch_size=4, workers=1,
                device="cpu", deterministic=True, save_every=0.0)
    return TrainConfig(**{**base, **kw})


def test_a_ten_image_split_keeps_t_1_and_says_why(tmp_path):
    data = make_folder(tmp_path / "data", per_class=25)  # 20% held out: 5 + 5 validation images
    log = io.StringIO()
    result = train(cfg(data, tmp_path / "run"), LineReporter(log))
    card = card_from_checkpoint(load_checkpoint(result.best_path))
    assert card.temperature == 1.0 and card.operating_point is None and card.calibration is None
    assert card.fitted_below_minimum == ()
    why = f"5 Fractured and 5 Normal images; a temperature needs at least {MIN_TEMPERATURE_PER_CLASS}"
    decision = json.loads((result.out / "report.json").read_text())["decision"]
    assert decision["temperature"] == 1.0 and decision["temperature_fitted"] is False
    assert decision["operating_point"] is None and why in decision["notes"][0]
    assert "T = 1 (not fitted)" in (result.out / "report.md").read_text()
    assert why in (result.out / "report.md").read_text() and why in (result.out / "calibration.md").read_text()
    assert why in log.getvalue() and "T = 1 kept and no operating point set" in log.getvalue()
    assert not (result.out / "reliability.png").exists()


def test_a_target_on_too_few_positives_is_refused_before_training(tmp_path):
    data = make_folder(tmp_path / "data", per_class=10)
    with pytest.raises(DataError) as e:
        train(cfg(data, tmp_path / "run"), target_sensitivity=0.75)
    msg = str(e.value)
    assert "the validation split (4 images of" in msg and "has 2 Fractured images" in msg
    assert f"at least {MIN_OPERATING_POINT_POSITIVES} Fractured images" in msg
    assert "--val DIR" in msg and "--force" in msg
    assert not (tmp_path / "run").exists()


def test_force_fits_on_a_small_split_and_the_card_records_it(tmp_path):
    from bonedeploy.artefacts.checkpoint import model_from_checkpoint
    from bonedeploy.eval.calibration import calibration_inputs, model_logits
    from bonedeploy.eval.decision import is_positive, positive_scores, rule_for
    from bonedeploy.eval.operating_point import sensitivity_specificity

    data = make_folder(tmp_path / "data", per_class=10)
    result = train(cfg(data, tmp_path / "run", epochs=2), target_sensitivity=0.75, force_calibration=True)
    card = card_from_checkpoint(load_checkpoint(result.best_path))
    op = card.operating_point
    assert op.target_sensitivity == 0.75 and op.n == 4 and op.threshold is not None
    assert card.fitted_below_minimum == ("temperature", "operating point") and op.fitted_below_minimum
    assert (result.out / "reliability.png").is_file()
    assert result.report["decision"]["temperature"] == card.temperature
    assert result.report["decision"]["fitted_below_minimum"] == ["temperature", "operating point"]
    # on the split it was chosen on, the stored threshold reaches the target
    ckpt = load_checkpoint(result.best_path)
    x, y, _ = calibration_inputs(ckpt, None, card, result.best_path)
    rule = rule_for(card)
    p = positive_scores(rule, model_logits(model_from_checkpoint(ckpt), card, x, result.best_path))
    assert sensitivity_specificity(p, is_positive(y, rule), op.threshold)[0] >= 0.75


def test_a_validation_folder_at_the_minimum_is_fitted_without_force(tmp_path):
    data = make_folder(tmp_path / "data", per_class=6)
    val = make_folder(tmp_path / "val", per_class=MIN_TEMPERATURE_PER_CLASS, seed=1)
    result = train(cfg(data, tmp_path / "run", val=str(val)), target_sensitivity=0.9)
    card = card_from_checkpoint(load_checkpoint(result.best_path))
    assert card.fitted_below_minimum == () and card.calibration["fitted"] is True
    assert card.operating_point.n_positive == MIN_TEMPERATURE_PER_CLASS
    assert card.operating_point.chosen_on == f"the validation folder {val}"
    decision = result.report["decision"]
    assert decision["temperature_fitted"] and decision["notes"] == []
    assert (result.out / "reliability.png").is_file()
