"""The OOD gate of an int8 file, refitted on what that file computes.

int8 convolutions move the pooled features the gate scores by more than the training images vary
along some directions, and a Mahalanobis distance weighs exactly those directions most: with the
fp32 gate, an int8 AlexNet refused many of the demo's test radiographs (benchmarks/ood.py).
So every int8 file the export builds (the first and each repair candidate) gets its Mahalanobis
head's tensors fitted again on its *own* features of the checkpoint's training split, and its threshold
set on its own scores of the validation split, by the same estimator and rule as ``train``
(``eval.ood``). Its card says so (``fitted_on``/``threshold_on``). fp16 barely moves the scores:
it keeps the checkpoint's gate, and the parity gate checks that.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, TYPE_CHECKING

import numpy as np

from bonedeploy.eval import ood
from bonedeploy.export.onnx import FEATURES, INPUT_NAME

if TYPE_CHECKING:  # pragma: no cover
    import onnx

MAX_FIT_IMAGES = 1024  # training images the refit runs at most (evenly spread)
_BUFFERS = ("proj", "means", "bank")  # the head's fitted tensors (models.ood.OODHead buffers)


@dataclass(frozen=True, eq=False)
class RefitData:
    """The images the checkpoint's gate was fitted and thresholded on."""

    train_x: np.ndarray
    train_y: np.ndarray
    val_x: np.ndarray
    train_where: str
    val_where: str


def refit_data(ckpt: dict[str, Any], card: Any, where: str) -> tuple[RefitData | None, str | None]:
    """The checkpoint's training and validation images, or (None, why not)."""
    from bonedeploy.errors import DataError
    from bonedeploy.eval.parity import CHECKPOINT_SPLIT, select_parity_set

    if card.ood is None or card.ood.method != "mahalanobis":
        return None, None  # no gate, or one whose tensors do not depend on the feature noise this way
    try:
        x, y, train_where = ood.training_split(ckpt, card.preprocess, where)
        val = select_parity_set(ckpt=ckpt, spec=card.preprocess, classes=card.classes)
    except DataError as e:
        return None, str(e)
    if val.kind != CHECKPOINT_SPLIT:
        return None, f"{where}: its validation images are not here"
    keep = np.unique(np.linspace(0, len(x) - 1, min(len(x), MAX_FIT_IMAGES)).round().astype(int))
    return RefitData(x[keep], y[keep], val.x, train_where, f"the checkpoint's validation split "
                     f"({len(val.x)} images of {val.root})"), None


def refit(model: "onnx.ModelProto", data: RefitData, label: str = "the int8 graph") -> None:
    """Replace ``model``'s head tensors and its card's gate with ones fitted on its own features."""
    from bonedeploy.export.onnx import read_card, set_card

    card = read_card(model)
    gate = card.ood
    power = gate.transform == "signed-sqrt"
    train = _measure(model, data.train_x)
    val = _measure(model, data.val_x)
    tensors, info = ood.fit_tensors(gate.method, train.features, data.train_y, power)
    min_std = float((gate.input_checks or {}).get("min_std", 1e-3))
    choice = ood.choose_threshold(ood.head_scores(gate.method, tensors, power, info.get("k"), val, min_std),
                                  gate.target_fpr)
    _set_tensors(model, tensors)
    new = gate.__class__.from_dict({
        **gate.to_dict(), "threshold": choice.threshold, "n_images": choice.n,
        "expected_fpr": round(choice.expected_fpr, 6), "fpr_upper95": round(choice.fpr_upper95, 6),
        "fitted_on": f"{data.train_where}, features computed by {label}",
        "threshold_on": f"{data.val_where}, scored by {label}"})
    set_card(model, card.with_(ood=new))


def _measure(model: "onnx.ModelProto", x: np.ndarray, batch: int = 16) -> ood.Scored:
    """The graph's pooled features (``FEATURES`` made an output of a copy) and pixel spread."""
    import onnx
    import onnxruntime as ort

    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    probe.graph.output.append(onnx.helper.make_tensor_value_info(FEATURES, onnx.TensorProto.FLOAT, None))
    session = ort.InferenceSession(probe.SerializeToString(), providers=["CPUExecutionProvider"])
    del probe
    parts = [session.run([FEATURES], {INPUT_NAME: x[s:s + batch]})[0] for s in range(0, len(x), batch)]
    feats = np.concatenate(parts).astype(np.float32)
    return ood.Scored(np.zeros((len(x), 2), np.float32), feats, x.reshape(len(x), -1).std(axis=1))


def _set_tensors(model: "onnx.ModelProto", tensors: dict[str, np.ndarray]) -> None:
    """Overwrite the head's initializers (``head.proj``, and any float32 copy a converter made)."""
    from onnx import numpy_helper

    found = set()
    for init in model.graph.initializer:
        name = init.name.removeprefix("head.").split("_", 1)[0]
        if init.name.startswith("head.") and name in _BUFFERS and name in tensors:
            value = np.asarray(tensors[name], dtype=numpy_helper.to_array(init).dtype)
            if value.shape != tuple(init.dims):
                raise ValueError(f"{init.name}: refitted shape {value.shape} != {tuple(init.dims)}")
            init.CopyFrom(numpy_helper.from_array(value, init.name))
            found.add(name)
    if found != set(tensors):
        raise ValueError(f"the graph's OOD head has no initializer for {sorted(set(tensors) - found)}")


def label_for(path: str | Path) -> str:
    return Path(path).name
