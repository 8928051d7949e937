"""train fits the OOD gate at its end (training features, validation threshold), every compared
score is recorded, and calibrate refits it, on the user's own data with --data."""

import json

import numpy as np
import pytest

from bonedeploy.artefacts.checkpoint import card_from_checkpoint, load_checkpoint
from bonedeploy.errors import ConfigError
from bonedeploy.training import TrainConfig, train
from trainkit import make_folder, register_tiny


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    root = tmp_path_factory.mktemp("ood-train")
    data = make_folder(root / "data", per_class=12)
    train(TrainConfig(model=register_tiny(), data=str(data), out=str(root / "run"), epochs=1, device="cpu",
                      workers=1, quiet=True, ood_fpr=0.05))
    return root


def test_best_pt_carries_the_gate_and_its_tensors(run):
    ckpt = load_checkpoint(run / "run" / "best.pt")
    gate = card_from_checkpoint(ckpt).ood
    assert gate is not None and gate.target_fpr == 0.05 and gate.feature_layer == "2"
    assert gate.n_images == 6 and gate.fitted_on.startswith("the training split (18 images")
    assert {c["method"] for c in gate.comparison} == {"energy", "mahalanobis-sqrt", "mahalanobis", "knn"}
    assert sum(c["chosen"] for c in gate.comparison) == 1
    if gate.method == "mahalanobis":
        t = ckpt["ood"]["tensors"]
        assert t["proj"].shape == (4, 4) and t["means"].shape == (1, 2, 4)


def test_the_report_shows_every_score_compared_and_how_many_images_the_threshold_rests_on(run):
    md = (run / "run" / "report.md").read_text()
    assert "## Out-of-distribution gate" in md and "| knn |" in md and "| energy |" in md
    assert "threshold set on 6 in-distribution images" in md
    report = json.loads((run / "run" / "report.json").read_text())
    assert report["decision"]["ood"]["method"] in ("energy", "mahalanobis", "knn")
    assert any("OOD threshold set on" in n for n in report["decision"]["notes"])  # 6 < 19 images


def test_an_impossible_target_is_refused_before_training(tmp_path):
    with pytest.raises(ConfigError, match="--ood-fpr"):
        train(TrainConfig(model=register_tiny(), data=str(tmp_path), out=str(tmp_path / "o"), ood_fpr=0.0))


def test_calibrate_with_data_refits_on_half_and_thresholds_on_the_other_half(run, tmp_path):
    from bonedeploy.eval.calibration import CalibrateConfig, calibrate_checkpoint

    mine = make_folder(tmp_path / "mine", per_class=10, seed=3)
    res = calibrate_checkpoint(CalibrateConfig(run / "run" / "best.pt", data=mine, out=tmp_path / "cal.pt",
                                               force=True, ood_fpr=0.1))
    ckpt = load_checkpoint(tmp_path / "cal.pt")
    gate = card_from_checkpoint(ckpt).ood
    assert gate == res.ood.gate and gate.n_images == 10 and gate.target_fpr == 0.1
    assert gate.fitted_on.startswith("a stratified half of") and gate.threshold_on.startswith("the other half")
    assert np.isfinite(gate.threshold) and "## Out-of-distribution gate" in (tmp_path / "calibration.md").read_text()
