"""``model.explain.onnx``: the classifier plus a second output ``cam``, Grad-CAM computed in-graph.

For a network whose target feature map A (N x K x h x w) is followed only by an MLP head
(Flatten, Dropout, Linear, ReLU ... Linear; AlexNet), the gradient of logit c with respect to A is

    dy_c/dA = W1^T (m1 * W2^T (m2 * W3[c]))      (m_i = 1[pre-activation_i > 0])

a product of ReLU masks and weight matrices: ordinary MatMul/Mul/Greater ops, no autograd. The
graph then does what pytorch-grad-cam does: channel weights = spatial mean of the gradient, map
= ReLU(sum_k w_k A_k), per-image min-max scaling, bilinear resize to the input (half-pixel, as
cv2.resize), min-max again. ``cam`` is N x classes x H x W: the map of every class, so the one
chosen by the card's operating point (or ``--target``) is picked after the shared
post-processing decides. Outputs: ``logits`` (unchanged), ``cam``.

Families without an in-graph map raise a ``ConfigError`` naming those that have one.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

from bonedeploy.errors import ConfigError

CAM_OUTPUT = "cam"
EPS = 1e-7  # pytorch-grad-cam's min-max scaling: x / (1e-7 + max)


def _split_mlp_head(model: Any, layer: str) -> tuple[list, list]:
    """(modules up to and including ``layer``, the Linear layers of the head after it)."""
    children = list(model.named_children())
    names = [n for n, _ in children]
    if layer not in names:
        raise ConfigError(f"in-graph Grad-CAM needs a top-level layer of the Sequential; {layer!r} is not "
                          f"one of {', '.join(names)}")
    cut = names.index(layer) + 1
    head = [m for _, m in children[cut:]]
    kinds = [type(m).__name__ for m in head]
    if not kinds or kinds[0] != "Flatten" or kinds[-1] != "Linear" or \
            any(k not in ("Flatten", "Dropout", "Linear", "ReLU") for k in kinds) or kinds.count("Flatten") != 1:
        raise ConfigError(f"in-graph Grad-CAM needs Flatten -> (Dropout|Linear|ReLU)* -> Linear after "
                          f"{layer!r}; found {' -> '.join(kinds)}")
    linears = [m for m in head if type(m).__name__ == "Linear"]
    # hidden layers must be Linear -> ReLU: the masks are then the ReLU derivatives
    if [k for k in kinds if k not in ("Dropout", "Flatten")] != ["Linear", "ReLU"] * (len(linears) - 1) + ["Linear"]:
        raise ConfigError(f"in-graph Grad-CAM needs Linear -> ReLU between head layers after {layer!r}; "
                          f"found {' -> '.join(kinds)}")
    return [m for _, m in children[:cut]], linears


def _mlp_head_cam(model: Any, layer: str, size: tuple[int, int]) -> Any:
    import torch
    import torch.nn.functional as F
    from torch import nn

    features, linears = _split_mlp_head(model, layer)

    class MlpHeadCam(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.features = nn.Sequential(*features)
            self.linears = nn.ModuleList(linears)

        def forward(self, x: torch.Tensor):
            a = self.features(x)
            n, k, h, w = a.shape
            z = a.flatten(1)
            masks = []
            for i, lin in enumerate(self.linears):
                z = lin(z)
                if i < len(self.linears) - 1:  # every hidden Linear is followed by a ReLU
                    masks.append((z > 0).to(z.dtype))
                    z = torch.relu(z)
            logits = z
            g = self.linears[-1].weight.unsqueeze(0).expand(n, -1, -1)  # N x C x D
            for lin, m in zip(reversed(self.linears[:-1]), reversed(masks)):
                g = torch.matmul(g * m.unsqueeze(1), lin.weight)  # N x C x D_in
            weights = g.reshape(n, g.shape[1], k, h * w).mean(dim=3)  # N x C x K
            cam = torch.relu(torch.matmul(weights, a.reshape(n, k, h * w)))  # N x C x hw
            cam = _minmax(cam).reshape(n, -1, h, w)
            cam = F.interpolate(cam, size=size, mode="bilinear", align_corners=False)
            return logits, _minmax(cam.flatten(2)).reshape(n, -1, size[0], size[1])

    def _minmax(t: torch.Tensor) -> torch.Tensor:
        t = t - t.amin(dim=-1, keepdim=True)
        return t / (EPS + t.amax(dim=-1, keepdim=True))

    return MlpHeadCam().eval()


CAM_GRAPHS: dict[str, Callable[[Any, str, tuple[int, int]], Any]] = {"alexnet": _mlp_head_cam}
"""Families whose Grad-CAM can be written as ordinary ONNX ops (family -> module builder)."""


def cam_module(family: str, model: Any, layer: str, size: tuple[int, int]) -> Any:
    try:
        build = CAM_GRAPHS[family]
    except KeyError as e:
        raise ConfigError(f"no in-graph Grad-CAM for the {family!r} family yet (families with one: "
                          f"{', '.join(CAM_GRAPHS)}); explain its .pt with `bonedeploy explain best.pt`") from e
    return build(model, layer, size)


def export_explain(checkpoint: str | Path, out: str | Path, layer: str | None = None,
                   opset: int | None = None) -> Path:
    """Write ``out`` (``model.explain.onnx``) for ``checkpoint``; fp32, the card with ``extra.cam``."""
    import torch

    from bonedeploy.artefacts.checkpoint import card_from_checkpoint, load_checkpoint, model_from_checkpoint
    from bonedeploy.explain.layers import default_layer
    from bonedeploy.export import onnx as ox
    from bonedeploy.models import get_model_entry
    from bonedeploy.util.fs import sha256_file

    src = Path(checkpoint)
    if src.suffix.lower() == ".onnx":
        raise ConfigError(f"{src}: --explain builds its graph from the checkpoint (best.pt), not an ONNX file")
    ckpt = load_checkpoint(src)
    card = card_from_checkpoint(ckpt, str(src))
    model = model_from_checkpoint(ckpt, str(src))
    family = get_model_entry(card.model).family
    layer = layer or default_layer(family, model)
    c, h, w = card.preprocess.input_shape
    wrapper = cam_module(family, model, layer, (h, w))
    opset = ox.validate_opset(opset or ox.DEFAULT_OPSET)
    example = torch.zeros(2, c, h, w)
    with torch.no_grad():
        program = torch.onnx.export(
            wrapper, (example,), None, input_names=[ox.INPUT_NAME], output_names=[ox.OUTPUT_NAME, CAM_OUTPUT],
            opset_version=opset, dynamo=True, dynamic_shapes=({0: torch.export.Dim(ox.BATCH_DIM, min=1)},),
            external_data=False, optimize=True, verbose=False)
    proto = program.model_proto
    ox.strip_debug_info(proto)
    card = card.with_(precision="fp32", source_sha256=sha256_file(src), extra={
        **card.extra, "opset": opset, "checkpoint": src.name,
        "cam": {"method": "gradcam", "layer": layer, "output": CAM_OUTPUT, "classes": list(card.classes),
                "postprocess": "ReLU, per-image min-max, bilinear (half-pixel) resize, min-max"}})
    ox.set_card(proto, card)
    check_explain_onnx(proto, out)
    return ox.save_onnx(proto, out)


def check_explain_onnx(proto: Any, where: Any) -> None:
    """The checker, then our IO contract: input ``image``, outputs ``logits`` and ``cam``."""
    import onnx

    from bonedeploy.errors import ArtefactError

    try:
        onnx.checker.check_model(proto, full_check=True)
    except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError, ValueError) as e:
        raise ArtefactError(f"{where}: fails the ONNX checker ({str(e).splitlines()[0][:200]})") from e
    outs = [o.name for o in proto.graph.output]
    if outs != ["logits", CAM_OUTPUT]:
        raise ArtefactError(f"{where}: an explain graph has outputs ['logits', 'cam'], found {outs}")
