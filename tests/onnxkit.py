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


def tiny_onnx_classifier(path: str | Path, card: ModelCard | None = None, gain: float = 8.0,
                         graph_shape: tuple[Any, ...] | None = None, opset: int = 17) -> Path:
    """GlobalAveragePool -> Flatten -> MatMul -> Add; metadata_props from ``card.to_props()``.
    ``graph_shape`` overrides the declared input shape (to build inconsistent artefacts)."""
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
    graph = helper.make_graph(
        nodes, "tiny", [helper.make_tensor_value_info("input", TensorProto.FLOAT, shape)],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [shape[0], k])],
        initializer=[numpy_helper.from_array(weight, "W"), numpy_helper.from_array(bias, "B")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = min(model.ir_version, 9)
    onnx.helper.set_model_props(model, card.to_props())
    onnx.checker.check_model(model)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, path)
    return path
