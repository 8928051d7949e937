"""The torchvision implementation of a ``PreprocessSpec`` (training and the PyTorch reference).

Kept apart from ``preprocess.py`` so that runtimes without torch never import it.
"""

from __future__ import annotations

import numpy as np
import torch
from torchvision.transforms import v2

from bonedeploy.data.preprocess import PreprocessSpec


def build_transform(spec: PreprocessSpec, train: bool = False) -> v2.Compose:
    """Float C x H x W tensor in [0,1] -> preprocessed tensor, in the seed's order."""
    steps: list = [v2.CenterCrop(spec.crop_size)]
    if train and spec.hflip_p > 0:
        steps.append(v2.RandomHorizontalFlip(p=spec.hflip_p))
    steps.append(_ToChannels(spec))
    if spec.mean is not None:
        steps.append(v2.Normalize([spec.mean] * spec.channels, [spec.std or 1.0] * spec.channels))
    return v2.Compose(steps)


class _ToChannels(torch.nn.Module):
    """Grayscale with the spec's luma (torchvision's weights), or replicate gray to RGB."""

    def __init__(self, spec: PreprocessSpec):
        super().__init__()
        self.spec = spec

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        c = x.shape[-3]
        if self.spec.channels == 1:
            if c == 1:
                return x
            if tuple(self.spec.luma) == (0.2989, 0.587, 0.114):
                return v2.functional.rgb_to_grayscale(x, num_output_channels=1)
            r, g, b = x.unbind(dim=-3)
            wr, wg, wb = self.spec.luma
            return (r * wr + g * wg + b * wb).unsqueeze(-3)
        return x if c == 3 else x.expand(*x.shape[:-3], 3, *x.shape[-2:])


def image_to_tensor(image: np.ndarray) -> torch.Tensor:
    """H x W x C float array (the reader's output) -> C x H x W float tensor."""
    if image.ndim == 2:
        image = image[..., None]
    return torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1), dtype=np.float32))


def preprocess_torch(image: np.ndarray, spec: PreprocessSpec, train: bool = False) -> torch.Tensor:
    return build_transform(spec, train)(image_to_tensor(image))
