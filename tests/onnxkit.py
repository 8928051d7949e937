"""Small artefacts for tests and benchmarks (needs the ``onnx`` package; never torch).

``tiny_onnx_classifier`` writes a real, bonedeploy-tagged ONNX classifier with a known rule
(brighter images -> Fractured), so inference, metrics and resume tests run in milliseconds and
their expected outputs can be computed by hand.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from bonedeploy.artefacts.card import ModelCard
from bonedeploy.data.preprocess import PreprocessSpec


def tiny_card(crop: int = 32, channels: int = 1, **changes: Any) -> ModelCard:
    return ModelCard(model="tiny", preprocess=PreprocessSpec(crop_size=crop, channels=channels), **changes)


def tiny_logits(x: np.ndarray, gain: float = 8.0) -> np.ndarray:
    """What ``tiny_onnx_classifier`` computes: [g*(m-0.5), -g*(m-0.5)] with m the image mean."""
    m = x.reshape(len(x), -1).mean(axis=1, dtype=np.float64)
    return np.stack([gain * (m - 0.5), -gain * (m - 0.5)], axis=1).astype(np.float32)


OOD_GAIN = 100.0


def tiny_ood_scores(x: np.ndarray) -> np.ndarray:
    """What ``tiny_onnx_classifier`` computes as ``ood_score`` when its card has an OOD gate:
    100 |m - 0.5| with m the image mean (very dark or very bright images are "unlike" the rest)."""
    m = x.reshape(len(x), -1).mean(axis=1, dtype=np.float64)
    return (OOD_GAIN * np.abs(m - 0.5)).astype(np.float32)


def tiny_ood_card(threshold: float = 20.0, **changes: Any) -> ModelCard:
    """``tiny_card`` with an OOD gate: images whose mean is more than 0.2 from 0.5 are refused."""
    from bonedeploy.artefacts.ood import OODGate

    gate = OODGate(method="mahalanobis", threshold=threshold, target_fpr=0.01, n_images=200,
                   expected_fpr=0.005, fpr_upper95=0.015, min_images=99, feature_layer="test",
                   comparison=({"method": "mahalanobis", "chosen": True},))
    return tiny_card(ood=gate, **changes)


def tiny_onnx_classifier(path: str | Path, card: ModelCard | None = None, gain: float = 8.0,
                         graph_shape: tuple[Any, ...] | None = None, opset: int = 17) -> Path:
    """GlobalAveragePool -> Flatten -> MatMul -> Add; metadata_props from ``card.to_props()``.
    ``graph_shape`` overrides the declared input shape (to build inconsistent artefacts). With an
    OOD gate in the card, a second output ``ood_score`` (``tiny_ood_scores``)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    card = card or tiny_card()
    c, h, w = card.preprocess.input_shape
    shape = list(graph_shape or ("batch", c, h, w))
    k = len(card.classes)
    weight = np.zeros((c, k), np.float32)
    weight[:, 0], weight[:, 1 % k] = gain / c, -gain / c
    bias = np.zeros(k, np.float32)
    bias[0], bias[1 % k] = -gain / 2, gain / 2
    nodes = [helper.make_node("GlobalAveragePool", ["input"], ["pooled"]),
             helper.make_node("Flatten", ["pooled"], ["flat"], axis=1),
             helper.make_node("MatMul", ["flat", "W"], ["mm"]),
             helper.make_node("Add", ["mm", "B"], ["logits"])]
    outputs = [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [shape[0], k])]
    inits = [numpy_helper.from_array(weight, "W"), numpy_helper.from_array(bias, "B")]
    if card.ood is not None:  # 100 |mean - 0.5|, one float per image
        nodes += [helper.make_node("ReduceMean", ["flat"], ["m"], axes=[1], keepdims=0),
                  helper.make_node("Sub", ["m", "half"], ["d"]), helper.make_node("Abs", ["d"], ["a"]),
                  helper.make_node("Mul", ["a", "gain"], ["ood_score"])]
        outputs.append(helper.make_tensor_value_info("ood_score", TensorProto.FLOAT, [shape[0]]))
        inits += [numpy_helper.from_array(np.float32(0.5), "half"), numpy_helper.from_array(np.float32(OOD_GAIN), "gain")]
    graph = helper.make_graph(
        nodes, "tiny", [helper.make_tensor_value_info("input", TensorProto.FLOAT, shape)], outputs,
        initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = min(model.ir_version, 9)
    onnx.helper.set_model_props(model, card.to_props())
    onnx.checker.check_model(model)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, path)
    return path
