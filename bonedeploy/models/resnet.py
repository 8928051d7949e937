"""The seed's CIFAR-style ResNets: basic blocks, two per stage, 3x3 projection shortcuts."""

from __future__ import annotations

from functools import partial

import torch.nn.functional as F
from torch import nn

from bonedeploy.models._registry import (ModelEntry, SeedResult, TrainDefaults, register_last_conv,
                                         register_model)

_CFGS = {
    # stage widths (strides 1, 2, 2, ...), flattened size after avg_pool2d(8)
    "resnet26": ((16, 32, 64, 128, 256), 256 * 3 * 3),
    "resnet16": ((16, 32, 64), 64 * 12 * 12),
}


class BasicBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.shortcut = nn.Sequential()
        if stride != 1 or cin != cout:
            # The seed projects with a 3x3 conv, not the usual 1x1.
            self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 3, stride, 1, bias=False),
                                          nn.BatchNorm2d(cout))

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class ResNet(nn.Module):
    """Stem conv + BN + ReLU, two ``BasicBlock``s per stage, avg_pool2d(8), one linear layer."""

    def __init__(self, widths: tuple[int, ...], flat: int, num_classes: int = 2, in_channels: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, widths[0], 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(widths[0])
        stages, cin = [], widths[0]
        for i, w in enumerate(widths):
            stride = 1 if i == 0 else 2
            stages.append(nn.Sequential(BasicBlock(cin, w, stride), BasicBlock(w, w, 1)))
            cin = w
        self.layers = nn.Sequential(*stages)
        self.linear = nn.Linear(flat, num_classes)

    def forward(self, x):
        out = self.layers(F.relu(self.bn1(self.conv1(x))))
        out = F.avg_pool2d(out, 8)
        return self.linear(out.flatten(1))


_VARIANTS = [
    ("resnet26", 3_152_370, "ResNet, 25 conv + FC", 20, 0.0, SeedResult(0.67, 0.87, 0.66, 9)),
    ("resnet16", 213_234, "ResNet, 15 conv + FC", 50, 1e-2,
     SeedResult(0.71, 0.97, 0.71, 41, 0.0053, 0.0321)),
]

for _name, _params, _desc, _epochs, _wd, _seed in _VARIANTS:
    register_model(
        ModelEntry(
            name=_name,
            family="resnet",
            builder=partial(ResNet, *_CFGS[_name]),
            kwargs={},
            defaults=TrainDefaults(epochs=_epochs, weight_decay=_wd),
            seed=_seed,
            params=_params,
            description=_desc,
        )
    )

# The output of the last residual stage, before the average pool.
register_last_conv("resnet", lambda model: "layers")
