"""Default Grad-CAM target layer per model family (a registry: one entry per family).

- alexnet: ``14``, the MaxPool that closes the last convolutional block (conv 3x3 -> ReLU ->
  pool, 256 x 11 x 11 at 400 px). The gradient of a logit with respect to it runs through the MLP
  head only, which is what makes the in-graph map of ``model.explain.onnx`` possible.
- vgg: the ReLU after the last convolution (the last feature map before Flatten).
- resnet: ``layers``, the output of the last residual stage (before the average pool).
"""

from __future__ import annotations

from typing import Any, Callable

from bonedeploy.errors import ConfigError


def _last_of(model: Any, kinds: tuple[str, ...]) -> str:
    names = [n for n, m in model.named_modules() if n and type(m).__name__ in kinds]
    if not names:
        raise ConfigError(f"{type(model).__name__} has no {'/'.join(kinds)} layer to explain")
    return names[-1]


def _alexnet(model: Any) -> str:
    """The module after the last Conv2d's ReLU: the last block's pooling (else the ReLU itself)."""
    mods = list(model.named_children())
    conv = max(i for i, (_, m) in enumerate(mods) if type(m).__name__ == "Conv2d")
    for name, m in mods[conv + 1:]:
        if type(m).__name__ == "MaxPool2d":
            return name
        if type(m).__name__ in ("Flatten", "Linear"):
            break
    return mods[conv + 1][0]


DEFAULT_LAYERS: dict[str, Callable[[Any], str]] = {
    "alexnet": _alexnet,
    "vgg": lambda m: _last_of(m, ("ReLU",)),
    "resnet": lambda m: "layers",
}


def default_layer(family: str, model: Any) -> str:
    try:
        pick = DEFAULT_LAYERS[family]
    except KeyError as e:
        raise ConfigError(f"no default Grad-CAM layer for family {family!r} (families: "
                          f"{', '.join(DEFAULT_LAYERS)}); pass --layer NAME") from e
    return pick(model)


def resolve_layer(model: Any, name: str) -> Any:
    try:
        return model.get_submodule(name)
    except AttributeError as e:
        names = [n for n, _ in model.named_modules() if n]
        raise ConfigError(f"--layer {name!r}: no such module; valid: {', '.join(names[:40])}"
                          + (" …" if len(names) > 40 else "")) from e
