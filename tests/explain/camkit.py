"""A small AlexNet-shaped model (conv blocks, then Flatten -> Dropout -> Linear -> ReLU ... Linear)
registered in the ``alexnet`` family at 64 x 64, so the Grad-CAM paths run in seconds."""

from __future__ import annotations

from pathlib import Path

TINY_ALEX = "tiny_alexnet_cam"


def build_tiny_alexnet(dropout: float = 0.5, num_classes: int = 2, in_channels: int = 1):
    from torch import nn

    return nn.Sequential(
        nn.Conv2d(in_channels, 8, 5, stride=2), nn.ReLU(inplace=True), nn.MaxPool2d(2),
        nn.Conv2d(8, 16, 3, padding=1), nn.ReLU(inplace=True), nn.MaxPool2d(2),
        nn.Flatten(), nn.Dropout(dropout), nn.Linear(16 * 7 * 7, 32), nn.ReLU(inplace=True),
        nn.Dropout(dropout), nn.Linear(32, 32), nn.ReLU(inplace=True), nn.Linear(32, num_classes))


def register_tiny_alexnet() -> str:
    from bonedeploy.models import ModelEntry, SeedResult, TrainDefaults, list_models, register_model

    if TINY_ALEX not in list_models():
        register_model(ModelEntry(
            name=TINY_ALEX, family="alexnet", builder=build_tiny_alexnet, kwargs={"dropout": 0.5},
            defaults=TrainDefaults(epochs=1), seed=SeedResult(0.5, 0.5, 0.5, 1), params=0,
            description="tiny AlexNet-shaped test net", input_size=(1, 64, 64)))
    return TINY_ALEX


def make_cam_checkpoint(path: Path, seed: int = 0, **card_changes) -> Path:
    import torch

    from bonedeploy.artefacts.card import ModelCard
    from bonedeploy.artefacts.checkpoint import save_checkpoint
    from bonedeploy.models import create_model, get_model_entry

    name = register_tiny_alexnet()
    torch.manual_seed(seed)
    net = create_model(name)
    # a positive bias keeps most hidden units active, as in a trained net
    for m in net:
        if isinstance(m, torch.nn.Linear):
            torch.nn.init.uniform_(m.bias, 0.0, 0.05)
    card = ModelCard(model=name, preprocess=get_model_entry(name).preprocess(), **card_changes)
    return save_checkpoint(path, {"card": card.to_dict(), "model_kwargs": {"dropout": 0.5},
                                  "state_dict": net.state_dict(), "epoch": 1})


def make_images(root: Path, n: int = 6, size: int = 72, seed: int = 0) -> Path:
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        a = (rng.random((size, size)) * 120).astype(np.uint8)
        y, x = rng.integers(10, size - 20, 2)
        a[y:y + 10, x:x + 4] = 255  # a bright bar somewhere
        Image.fromarray(a).save(root / f"img{i:02d}.png")
    return root
