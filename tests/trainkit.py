"""Test helpers for the training tests: tiny image folders and a tiny registered model.

The seed's models all take 1 x 400 x 400 inputs and cost 1-3 GMAC per image, too slow for many
CPU tests; ``tiny_test`` has the same interface (logits N x 2, dropout and BatchNorm, so the
RNG/resume paths are exercised) at a fraction of the cost. It is registered only by tests.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

TINY = "tiny_test"


def build_tiny(dropout: float = 0.5, num_classes: int = 2, in_channels: int = 1):
    from torch import nn

    return nn.Sequential(
        nn.Conv2d(in_channels, 4, 8, stride=8), nn.BatchNorm2d(4), nn.ReLU(),
        nn.AdaptiveAvgPool2d(4), nn.Flatten(), nn.Dropout(dropout), nn.Linear(64, num_classes),
    )


def register_test_family() -> None:
    """The "test" family's last convolutional block: the ReLU after the first conv and BatchNorm
    (index 2 of ``tiny_test``; ``tiny_slow_test`` puts a pause first, so its ReLU is one later)."""
    from bonedeploy.models import register_last_conv
    from bonedeploy.models._registry import _LAST_CONV

    if "test" not in _LAST_CONV:
        register_last_conv("test", lambda m: [n for n, c in m.named_children() if type(c).__name__ == "ReLU"][0])


def _register(name: str, builder, description: str) -> str:
    """One "test"-family entry (398 parameters), once per process."""
    from bonedeploy.models import (ModelEntry, SeedResult, TrainDefaults, list_models,
                                   register_model)

    if name not in list_models():
        register_test_family()
        register_model(ModelEntry(
            name=name, family="test", builder=builder, kwargs={"dropout": 0.5},
            defaults=TrainDefaults(epochs=3, lr=1e-3, batch_size=4), params=398,
            seed=SeedResult(val_acc=0.5, train_acc=0.5, f1=0.5, saved_epoch=1),
            description=description))
    return name


def register_tiny() -> str:
    return _register(TINY, build_tiny, "tiny test net")


def make_folder(root: Path, per_class: int = 10, size: int = 40, classes=("Fractured", "Normal"),
                seed: int = 0) -> Path:
    """Small PNGs: a vertical bright bar for the first class, a horizontal one for the second,
    so that a model can learn something in a few epochs."""
    rng = np.random.default_rng(seed)
    for k, name in enumerate(classes):
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            a = (rng.random((size, size)) * 80).astype(np.uint8)
            mid = slice(size // 2 - 3, size // 2 + 3)
            if k % 2 == 0:
                a[:, mid] = 255
            else:
                a[mid, :] = 255
            Image.fromarray(a).save(root / name / f"{name[:1]}{i:03d}.png")
    return root


SLOW = "tiny_slow_test"


def build_tiny_slow(dropout: float = 0.5, num_classes: int = 2, in_channels: int = 1, pause: float = 0.08):
    """``tiny_test`` that sleeps in every training forward, so that a test can kill a worker while
    an epoch is in flight (the sleep changes no number)."""
    import time

    from torch import nn

    class Pause(nn.Module):
        def forward(self, x):
            if self.training:
                time.sleep(pause)
            return x

    return nn.Sequential(Pause(), *build_tiny(dropout, num_classes, in_channels))


def register_tiny_slow() -> str:
    return _register(SLOW, build_tiny_slow, "tiny test net that pauses")
