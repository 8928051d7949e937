"""Grad-CAM from a PyTorch model with ``pytorch_grad_cam.GradCAM`` (the ``[explain]`` extra)."""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from bonedeploy.errors import BackendUnavailableError


def torch_cams(model: Any, x: np.ndarray, layer: Any, targets: Sequence[int]) -> np.ndarray:
    """N x H x W float32 maps in [0, 1] for class ``targets[i]`` of image ``i`` (ReLU, per-image
    min-max scaling, bilinear resize to the input, as pytorch-grad-cam does)."""
    try:
        from pytorch_grad_cam import GradCAM
        from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget
    except ImportError as e:
        raise BackendUnavailableError(f"Grad-CAM from a .pt needs the grad-cam package "
                                      f"(pip install 'bonedeploy[explain]'): {e}") from e
    import torch

    model.eval()
    with GradCAM(model=model, target_layers=[layer]) as cam:
        maps = cam(input_tensor=torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)),
                   targets=[ClassifierOutputTarget(int(t)) for t in targets])
    return np.asarray(maps, dtype=np.float32)
