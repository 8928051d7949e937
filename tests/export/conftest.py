"""Exports of the planted and the healthy ``tiny_outlier`` model, shared by the compare and repair
tests (each export costs seconds of torch and onnxruntime; they are made once per session)."""

from __future__ import annotations

from pathlib import Path

import pytest

from exportkit import make_tree
from precisionkit import HAS_OPENVINO, export_outlier, outlier_checkpoint


@pytest.fixture(scope="session")
def outlier_data(tmp_path_factory) -> Path:
    """80 images, split half and half: 40 to calibrate on, 40 to gate on."""
    pytest.importorskip("torch")
    pytest.importorskip("onnxconverter_common")
    return make_tree(tmp_path_factory.mktemp("outlier") / "data", per_class=40)


@pytest.fixture(scope="session")
def planted_ckpt(outlier_data) -> Path:
    return outlier_checkpoint(outlier_data.parent / "planted.pt", outlier_data, planted=True)


@pytest.fixture(scope="session")
def healthy_ckpt(outlier_data) -> Path:
    return outlier_checkpoint(outlier_data.parent / "healthy.pt", outlier_data, planted=False)


@pytest.fixture(scope="session")
def planted_plain(planted_ckpt):
    """The planted model exported with ``--repair off``: its int8 fails the gate."""
    return export_outlier(planted_ckpt, planted_ckpt.parent / "plain", repair="off", openvino=HAS_OPENVINO)


@pytest.fixture(scope="session")
def planted_repaired(planted_ckpt):
    """The default repair, without a time limit (a loaded CI box must not change the outcome) and
    with only the calibration recipe that needs no new calibration pass."""
    from bonedeploy.export.precision import DEFAULT_CALIBRATION
    from bonedeploy.export.repair import RepairConfig

    return export_outlier(planted_ckpt, planted_ckpt.parent / "repaired", openvino=HAS_OPENVINO,
                          repair=RepairConfig(time_ratio=None, calibrations=(DEFAULT_CALIBRATION,),
                                              throughput_s=0.2))
