"""The OOD gate as the card stores it: round trips, old cards, the refusal rule and its words."""

import numpy as np
import pytest

from bonedeploy.artefacts.card import ModelCard
from bonedeploy.artefacts.ood import BLANK_SCORE, OODGate, rejection_statuses
from bonedeploy.errors import ArtefactError
from onnxkit import tiny_card, tiny_ood_card


def test_the_gate_travels_in_every_card_format():
    card = tiny_ood_card(threshold=12.5)
    assert ModelCard.from_dict(card.to_dict()) == card
    assert ModelCard.from_props(card.to_props()) == card
    assert card.to_props()["bonedeploy.ood"].startswith("{")


def test_a_card_from_before_the_gate_still_loads_without_one():
    old = tiny_card().to_dict()
    del old["ood"]  # what every artefact made before issue 18 carries
    card = ModelCard.from_dict(old)
    assert card.ood is None and "bonedeploy.ood" not in card.to_props()


def test_refused_above_the_threshold_or_when_not_a_number():
    gate = tiny_ood_card(threshold=10.0).ood
    assert gate.rejects([9.99, 10.0, 10.01, np.nan, np.inf, -np.inf]).tolist() == [
        False, False, True, True, True, False]


def test_the_status_names_score_and_threshold_and_says_when_the_image_is_blank():
    gate = tiny_ood_card(threshold=10.0).ood
    assert gate.status(12.345) == "rejected: out of distribution (score 12.35 > threshold 10)"
    assert "blank image" in gate.status(BLANK_SCORE)
    assert rejection_statuses(gate, np.array([1.0, 50.0])) == [None, gate.status(50.0)]
    assert rejection_statuses(None, np.array([1.0, 50.0])) == [None, None]


def test_a_malformed_gate_is_refused_naming_the_choices():
    d = tiny_ood_card().ood.to_dict()
    with pytest.raises(ArtefactError, match="valid: energy, mahalanobis, knn"):
        OODGate.from_dict({**d, "method": "vibes"})
    with pytest.raises(ArtefactError, match="finite"):
        OODGate.from_dict({**d, "threshold": float("nan")})
    with pytest.raises(ArtefactError, match="malformed"):
        OODGate.from_dict({"method": "energy"})


def test_describe_says_how_many_images_the_threshold_rests_on():
    gate = OODGate(method="energy", threshold=-1.0, target_fpr=0.01, n_images=40, expected_fpr=1 / 41,
                   fpr_upper95=0.072, min_images=99)
    assert gate.below_minimum
    text = gate.describe()
    assert "40 in-distribution images" in text and "2.4%" in text and "fewer than the 99" in text
