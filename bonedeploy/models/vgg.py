"""The seed's VGG-style nets: unpadded 3x3 convs, variants generated from a config table."""

from __future__ import annotations

from functools import partial

from torch import nn

from bonedeploy.models._registry import (ModelEntry, SeedResult, TrainDefaults, register_last_conv,
                                         register_model)

# Channel counts; "M" is a max pool. Unpadded convs, as in the seed.
_CFGS = {
    "vgg8": {"layers": [16, 16, "M", 32, 32, "M", 64, 64, "M", 128, 128, "M"], "pool": 3,
             "avgpool": None, "flat": 128 * 20 * 20},
    "vgg10": {"layers": [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M"],
              "pool": 2, "avgpool": 7, "flat": 512 * 2 * 2},
}


class VGG(nn.Sequential):
    """Unpadded conv/ReLU stacks and max pools from a ``_CFGS`` row, then one linear layer; a flat
    ``nn.Sequential`` so that checkpoint keys stay the layer indices."""

    def __init__(self, cfg: str, num_classes: int = 2, in_channels: int = 1):
        spec = _CFGS[cfg]
        layers: list[nn.Module] = []
        c = in_channels
        for v in spec["layers"]:
            if v == "M":
                layers.append(nn.MaxPool2d(spec["pool"], 2))
            else:
                layers += [nn.Conv2d(c, v, 3), nn.ReLU(inplace=True)]
                c = v
        if spec["avgpool"]:
            layers.append(nn.AvgPool2d(spec["avgpool"]))
        layers += [nn.Flatten(), nn.Linear(spec["flat"], num_classes)]
        super().__init__(*layers)


_VARIANTS = [
    ("vgg8", 395_634, "VGG, 8 conv", SeedResult(0.72, 0.73, 0.72, 65)),
    ("vgg10", 7_638_210, "VGG, 10 conv", SeedResult(0.72, 0.71, 0.72, 83)),
]

for _name, _params, _desc, _seed in _VARIANTS:
    register_model(
        ModelEntry(
            name=_name,
            family="vgg",
            builder=partial(VGG, _name),
            kwargs={},
            defaults=TrainDefaults(epochs=100),
            seed=_seed,
            params=_params,
            description=_desc,
        )
    )


def last_conv(model: nn.Module) -> str:
    """The ReLU after the last convolution: the last feature map before the pooling and Flatten."""
    return [n for n, m in model.named_modules() if n and isinstance(m, nn.ReLU)][-1]


register_last_conv("vgg", last_conv)
