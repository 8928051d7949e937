"""Grad-CAM's default target layer: the model family's last convolutional block, as the model
registry records it (``bonedeploy.models.last_conv_layer``, which the out-of-distribution gate's
features read too): alexnet the MaxPool closing its last block, vgg the ReLU after the last
convolution, resnet ``layers``.
"""

from __future__ import annotations

from typing import Any

from bonedeploy.errors import ConfigError


def default_layer(family: str, model: Any) -> str:
    from bonedeploy.models import last_conv_layer

    try:
        return last_conv_layer(family, model)
    except ConfigError as e:
        raise ConfigError(f"no default Grad-CAM layer: {e}; pass --layer NAME") from e


def resolve_layer(model: Any, name: str) -> Any:
    try:
        return model.get_submodule(name)
    except AttributeError as e:
        names = [n for n, _ in model.named_modules() if n]
        raise ConfigError(f"--layer {name!r}: no such module; valid: {', '.join(names[:40])}"
                          + (" …" if len(names) > 40 else "")) from e
