"""A small quantisation-hostile model for the compare and repair tests (benchmarks/precision.py
plants the same fault in AlexNet).

``tiny_outlier`` is Conv -> ReLU -> MaxPool -> BatchNorm -> Conv -> ReLU -> GAP -> Linear, like
AlexNet's first block (BatchNorm after the pool, so the exporter does not fold it). Its weights are
set by hand so it decides by brightness with clear margins (make_tree: Fractured is brighter).
``plant=True`` multiplies one channel of the first convolution by ``FACTOR`` and has the
BatchNorm undo it: fp32 outputs are unchanged, but that channel sets the int8 scale of the
activations it flows through and the other channels round to zero.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

HAS_OPENVINO = importlib.util.find_spec("openvino") is not None
OUTLIER = "tiny_outlier"
FACTOR = 1000.0
CROP = 32
GAIN, CUT = 2.0, 1.96  # logits +-GAIN * (sum of channel means - 8 * CUT)


def build_outlier(dropout: float = 0.0, num_classes: int = 2, in_channels: int = 1):
    from torch import nn

    return nn.Sequential(
        nn.Conv2d(in_channels, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.BatchNorm2d(8),
        nn.Conv2d(8, 8, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
        nn.Linear(8, num_classes),
    )


def register_outlier() -> str:
    from bonedeploy.models import ModelEntry, SeedResult, TrainDefaults, list_models, register_model

    if OUTLIER not in list_models():
        register_model(ModelEntry(
            name=OUTLIER, family="test", builder=build_outlier, kwargs={}, defaults=TrainDefaults(epochs=1),
            params=746, seed=SeedResult(val_acc=0.5, train_acc=0.5, f1=0.5, saved_epoch=1),
            description="planted int8 outlier test net"))
    return OUTLIER


def brightness_weights(net, seed: int = 0) -> None:
    """Every channel a (slightly different) brightness detector; Fractured when bright."""
    import torch

    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        conv0, bn, conv1, fc = net[0], net[3], net[4], net[8]
        conv0.weight.copy_(1 / 9 + 0.02 * torch.randn(conv0.weight.shape, generator=g))
        conv0.bias.fill_(1.5)  # normalised pixels are ~N(0, 1): keep most of them above zero
        bn.running_mean.zero_()
        bn.running_var.fill_(1.0)
        conv1.weight.zero_()
        for c in range(8):
            conv1.weight[c, c, 1, 1] = 1.0
        conv1.bias.zero_()
        # make_tree's images average 2.1 (Fractured) and 1.8 (Normal) per channel here
        fc.weight.copy_(torch.tensor([[GAIN] * 8, [-GAIN] * 8]))
        fc.bias.copy_(torch.tensor([-GAIN * 8 * CUT, GAIN * 8 * CUT]))


def plant(net, channel: int = 0, factor: float = FACTOR) -> None:
    """Scale ``channel`` of the first convolution by ``factor``; the BatchNorm takes it back out
    (mean x factor, variance x factor^2, eps kept), so fp32 decisions do not change."""
    import torch

    conv, bn = net[0], net[3]
    with torch.no_grad():
        conv.weight[channel] *= factor
        conv.bias[channel] *= factor
        bn.running_mean[channel] *= factor
        bn.running_var[channel] = factor ** 2 * (bn.running_var[channel] + bn.eps) - bn.eps


def outlier_checkpoint(path: Path, data_root: Path | None = None, planted: bool = False) -> Path:
    """A checkpoint of ``tiny_outlier`` (recorded split of ``data_root`` when given)."""
    from bonedeploy.artefacts.card import ModelCard
    from bonedeploy.artefacts.checkpoint import save_checkpoint
    from bonedeploy.data.preprocess import PreprocessSpec
    from bonedeploy.models import create_model

    net = create_model(register_outlier()).eval()
    brightness_weights(net)
    if planted:
        plant(net)
    ckpt = {"card": ModelCard(model=OUTLIER, preprocess=PreprocessSpec(crop_size=CROP)).to_dict(),
            "model_kwargs": {}, "state_dict": net.state_dict(), "epoch": 1}
    if data_root is not None:
        from bonedeploy.data.folders import scan_image_folder
        from bonedeploy.data.split import make_split

        ckpt["split"] = make_split(scan_image_folder(data_root), 0.5, 0).to_dict()
    return save_checkpoint(path, ckpt)


def export_outlier(ckpt: Path, out: Path, **kwargs):
    """``bonedeploy export`` of a tiny_outlier checkpoint: fp32 and int8 unless told, no TensorRT."""
    from bonedeploy.export.from_checkpoint import run_export
    from bonedeploy.export.results import ExportConfig

    register_outlier()
    return run_export(ExportConfig(ckpt, out=out, trt=False, **{"precisions": ("fp32", "int8"), **kwargs}))
