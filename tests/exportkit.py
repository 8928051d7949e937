"""Test helpers for the export and parity tests: image-folder trees and checkpoints.

``tiny`` checkpoints (trainkit's 398-parameter net on 32 x 32 inputs) exercise the pipeline in
milliseconds; ``vgg8``/``resnet16`` (random init, 400 x 400) are the real seed architectures.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from trainkit import register_tiny  # noqa: E402

CLASSES = ("Fractured", "Normal")


def make_tree(root: Path, per_class: int = 6, size: tuple[int, int] = (48, 40), seed: int = 0) -> Path:
    """``root/Fractured``, ``root/Normal``: noise PNGs, Fractured brighter (so labels mean something)."""
    rng = np.random.default_rng(seed)
    for label, cls in enumerate(CLASSES):
        (root / cls).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            base = 150 if label == 0 else 70
            img = np.clip(base + rng.normal(0, 40, size), 0, 255).astype(np.uint8)
            Image.fromarray(img).save(root / cls / f"{cls[0]}{i:03d}.png")
    return root


def make_checkpoint(path: Path, model: str = "tiny", data_root: Path | None = None, seed: int = 0,
                    val_fraction: float = 0.2) -> Path:
    """A bonedeploy checkpoint with random weights; with ``data_root``, a recorded split of it."""
    import torch

    from bonedeploy.artefacts.card import ModelCard
    from bonedeploy.artefacts.checkpoint import save_checkpoint
    from bonedeploy.models import create_model
    from bonedeploy.data.preprocess import PreprocessSpec

    spec = PreprocessSpec()
    kwargs: dict = {}
    if model == "tiny":
        model = register_tiny()
        spec = PreprocessSpec(crop_size=32)
        kwargs = {"dropout": 0.5}
    torch.manual_seed(seed)
    net = create_model(model, **kwargs)
    ckpt = {"card": ModelCard(model=model, preprocess=spec).to_dict(), "model_kwargs": kwargs,
            "state_dict": net.state_dict(), "epoch": 1}
    if data_root is not None:
        from bonedeploy.data.folders import scan_image_folder
        from bonedeploy.data.split import make_split

        ckpt["split"] = make_split(scan_image_folder(data_root), val_fraction, 0).to_dict()
    return save_checkpoint(path, ckpt)


def gated_checkpoint(root: Path, per_class: int = 10) -> Path:
    """A ``tiny`` checkpoint with a fitted OOD gate (``calibrate`` on its recorded split: features
    of the training images, threshold on the validation images)."""
    from bonedeploy.eval.calibration import CalibrateConfig, calibrate_checkpoint

    data = make_tree(root / "data", per_class=per_class)
    ckpt = make_checkpoint(root / "run" / "best.pt", data_root=data)
    calibrate_checkpoint(CalibrateConfig(ckpt, force=True, ood_fpr=0.05))
    return ckpt
