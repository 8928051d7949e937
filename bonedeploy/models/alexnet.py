"""The seed's AlexNet for 1 x 400 x 400 inputs (conv -> ReLU -> pool -> BatchNorm order)."""

from __future__ import annotations

from torch import nn

from bonedeploy.models._registry import (ModelEntry, SeedResult, TrainDefaults, register_last_conv,
                                         register_model)


class AlexNet(nn.Sequential):
    """A flat ``nn.Sequential`` so that checkpoints keep the seed's layer indices (``0.weight``)."""

    def __init__(self, dropout: float = 0.5, num_classes: int = 2, in_channels: int = 1):
        super().__init__(*_layers(dropout, num_classes, in_channels))


def _layers(dropout: float, num_classes: int, in_channels: int) -> list[nn.Module]:
    return [
        nn.Conv2d(in_channels, 96, 11, stride=4),
        nn.ReLU(inplace=True),
        nn.MaxPool2d(3, 2),
        nn.BatchNorm2d(96),
        nn.Conv2d(96, 256, 5, padding=2),
        nn.ReLU(inplace=True),
        nn.MaxPool2d(3, 2),
        nn.BatchNorm2d(256),
        nn.Conv2d(256, 384, 3, padding=1),
        nn.ReLU(inplace=True),
        nn.Conv2d(384, 384, 3, padding=1),
        nn.ReLU(inplace=True),
        nn.Conv2d(384, 256, 3, padding=1),
        nn.ReLU(inplace=True),
        nn.MaxPool2d(3, 2),
        nn.Flatten(),
        nn.Dropout(dropout),
        nn.Linear(256 * 11 * 11, 4096),
        nn.ReLU(inplace=True),
        nn.Dropout(dropout),
        nn.Linear(4096, 4096),
        nn.ReLU(inplace=True),
        nn.Linear(4096, num_classes),
    ]


# name, dropout, weight decay, seed (val, train, f1, saved epoch, train loss, val loss)
_VARIANTS = [
    ("alexnet_d05", 0.5, 0.0, SeedResult(0.76, 1.00, 0.76, 71)),
    ("alexnet_d08", 0.8, 0.0, SeedResult(0.82, 1.00, 0.82, 88)),
    ("alexnet_d08_wd1e-4", 0.8, 1e-4, SeedResult(0.85, 0.95, 0.85, 74, 0.0059, 0.0254)),
    ("alexnet_d08_wd1e-3", 0.8, 1e-3, SeedResult(0.83, 0.88, 0.83, 37, 0.0084, 0.0167)),
]

for _name, _p, _wd, _seed in _VARIANTS:
    register_model(
        ModelEntry(
            name=_name,
            family="alexnet",
            builder=AlexNet,
            kwargs={"dropout": _p},
            defaults=TrainDefaults(epochs=100, weight_decay=_wd),
            seed=_seed,
            params=147_395_970,
            description="AlexNet",
        )
    )

def last_conv(model: nn.Module) -> str:
    """The module after the last Conv2d's ReLU: the last block's pooling, 256 x 11 x 11 at 400 px
    (else the ReLU itself). The gradient of a logit with respect to it runs through the MLP head
    only, which is what makes the in-graph Grad-CAM map of ``model.explain.onnx`` possible."""
    mods = list(model.named_children())
    conv = max(i for i, (_, m) in enumerate(mods) if type(m).__name__ == "Conv2d")
    for name, m in mods[conv + 1:]:
        if type(m).__name__ == "MaxPool2d":
            return name
        if type(m).__name__ in ("Flatten", "Linear"):
            break
    return mods[conv + 1][0]


register_last_conv("alexnet", last_conv)

SELECTED = "alexnet_d08_wd1e-3"
"""The seed's final choice (dropout 0.8, λ 1e-3)."""
