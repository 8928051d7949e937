"""The model card's ``fitted_below_minimum`` (issue 23): old cards without it still load, and a
forced fit travels through every format the card is stored in."""

from __future__ import annotations

from bonedeploy.artefacts.card import ModelCard
from bonedeploy.artefacts.operating_point import OperatingPoint

# A card as bonedeploy wrote it before the field existed (fields as in 410bc69's to_dict()).
OLD = {"model": "tiny", "classes": ["Fractured", "Normal"],
       "preprocess": ModelCard(model="tiny").preprocess.to_dict(), "precision": "fp32",
       "source_sha256": None, "bonedeploy_version": "0.1.0", "extra": {},
       "operating_point": {"positive_class": "Fractured", "threshold": 0.4, "target_sensitivity": 0.95,
                           "n": 80, "n_positive": 40, "chosen_on": "val", "chosen_at": "2025"},
       "temperature": 1.3, "calibration": {"temperature": 1.3}, "history": []}


def test_an_old_card_without_the_field_loads_as_not_forced():
    card = ModelCard.from_dict(OLD)
    assert card.fitted_below_minimum == () and not card.operating_point.fitted_below_minimum
    assert card.temperature == 1.3 and card.operating_point.threshold == 0.4
    assert ModelCard.from_props({k: v for k, v in card.to_props().items()
                                 if not k.endswith("fitted_below_minimum")}) == card


def test_a_forced_fit_survives_props_and_the_sidecar(tmp_path):
    from bonedeploy.artefacts.sidecar import build_sidecar, card_from_sidecar, read_sidecar, write_sidecar

    op = OperatingPoint("Fractured", threshold=0.3, target_sensitivity=0.95, n=10, n_positive=5,
                        fitted_below_minimum=True)
    card = ModelCard(model="tiny", operating_point=op, temperature=4.4,
                     fitted_below_minimum=["temperature", "operating point"])
    assert card.fitted_below_minimum == ("temperature", "operating point")
    assert ModelCard.from_props(card.to_props()) == card
    engine = tmp_path / "model.trt"
    engine.write_bytes(b"x")
    write_sidecar(engine, build_sidecar({"tensorrt": "10"}, card, {}, "model.onnx", "0" * 64, "now"))
    assert card_from_sidecar(read_sidecar(engine)) == card
    assert "--force" in op.describe()
