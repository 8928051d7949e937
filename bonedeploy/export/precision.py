"""Reduced-precision ONNX variants: fp16 (onnxconverter-common) and int8 static QDQ
(onnxruntime.quantization), both with float32 input and output so every consumer feeds the same
tensor. TensorRT builds them strongly typed.

int8 choices: QDQ format (what TensorRT's explicit quantisation reads, and what onnxruntime's CPU
EP fuses into integer kernels), per-channel symmetric int8 weights, symmetric int8 activations
(TensorRT requires zero points of 0), float biases (TensorRT cannot dequantize int32 ones), MinMax
calibration on preprocessed training images, after ``quant_pre_process`` (onnxruntime's
recommended graph optimisation + shape inference first).
"""

from __future__ import annotations

import hashlib
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from bonedeploy.artefacts.card import ModelCard
from bonedeploy.errors import DataError
from bonedeploy.export.onnx import INPUT_NAME, set_card, strip_debug_info
from bonedeploy.util.fs import sha256_file
from bonedeploy.data.preprocess import PreprocessSpec

if TYPE_CHECKING:  # pragma: no cover
    import onnx

MIN_CALIBRATION = 32
MAX_CALIBRATION = 64  # MinMax ranges settle well before; more only costs CPU time and memory
CALIB_BATCH = 8


def to_fp16(fp32: "onnx.ModelProto", card: ModelCard) -> "onnx.ModelProto":
    """Weights and activations in float16, float32 ``image``/``logits`` kept (casts at the edges)."""
    import onnx
    from onnxconverter_common import float16

    model = onnx.ModelProto()
    model.CopyFrom(fp32)
    with warnings.catch_warnings():  # one "truncated to 1e-07" warning per tiny weight: noise
        warnings.filterwarnings("ignore", message=".*will be truncated to.*", category=UserWarning)
        model = float16.convert_float_to_float16(model, keep_io_types=True)
    strip_debug_info(model)
    set_card(model, card.with_(precision="fp16"))
    return model


@dataclass(frozen=True)
class CalibrationSet:
    """Preprocessed calibration images and where they came from (recorded in the int8 card)."""

    x: np.ndarray
    files: tuple[str, ...]
    root: str
    source: str
    sha256: str

    def describe(self) -> dict[str, Any]:
        return {"source": self.source, "root": self.root, "n": len(self.files),
                "sha256": self.sha256, "files": list(self.files)}


def calibration_set(ckpt: dict[str, Any] | None, calib_dir: str | Path | None, spec: PreprocessSpec,
                    where: str = "checkpoint", n_min: int = MIN_CALIBRATION,
                    n_max: int = MAX_CALIBRATION) -> CalibrationSet:
    """``--calib DIR`` when given, else the checkpoint's recorded train split when its folder
    exists here. Fewer than ``n_min`` images, or neither source, is a ``DataError``."""
    if calib_dir is not None:
        root, rel, source = _from_folder(Path(calib_dir))
    else:
        root, rel, source = _from_split(ckpt, where)
    if len(rel) < n_min:
        raise DataError(f"{root}: int8 calibration needs at least {n_min} images, found {len(rel)}; "
                        "pass --calib DIR with more training-like radiographs")
    rel = _spread(sorted(rel), n_max)
    x = _decode(root, rel, spec)
    return CalibrationSet(x=x, files=tuple(str(p) for p in rel), root=str(root), source=source,
                          sha256=_digest(root, rel))


def _from_folder(folder: Path) -> tuple[Path, list[Path], str]:
    from bonedeploy.data.folders import list_images

    if not folder.is_dir():
        raise DataError(f"{folder}: --calib folder does not exist")
    files, _skipped = list_images([folder])
    return folder, [Path(f).resolve().relative_to(folder.resolve()) for f in files], "--calib folder"


def _from_split(ckpt: dict[str, Any] | None, where: str) -> tuple[Path, list[Path], str]:
    split = (ckpt or {}).get("split") or {}
    root = split.get("root")
    train = split.get("train") or []
    if not root or not train:
        raise DataError(f"{where}: int8 needs calibration images and the checkpoint records no "
                        "train split; pass --calib DIR (at least 32 training-like radiographs)")
    if not Path(root).is_dir():
        raise DataError(f"{where}: int8 needs calibration images; the checkpoint's train folder "
                        f"{root} does not exist here; pass --calib DIR")
    rel = [Path(e["path"] if isinstance(e, dict) else e[0]) for e in train]
    return Path(root), [p for p in rel if (Path(root) / p).is_file()], "checkpoint train split"


def _spread(items: list[Path], n_max: int) -> list[Path]:
    """At most ``n_max`` items evenly spaced over the sorted list (both classes, deterministic)."""
    if len(items) <= n_max:
        return items
    idx = np.unique(np.linspace(0, len(items) - 1, n_max).round().astype(int))
    return [items[i] for i in idx]


def _decode(root: Path, rel: list[Path], spec: PreprocessSpec) -> np.ndarray:
    from bonedeploy.data.decode import decode_dataset

    return decode_dataset(root, [(p, 0) for p in rel], spec).x.astype(np.float32, copy=False)


def _digest(root: Path, rel: list[Path]) -> str:
    """sha256 over "<file sha256>  <relative path>" lines: names and contents both count."""
    lines = [f"{sha256_file(root / p)}  {p.as_posix()}" for p in rel]
    return hashlib.sha256("\n".join(lines).encode()).hexdigest()


class _ArrayReader:
    """onnxruntime CalibrationDataReader over an in-memory batch array."""

    def __init__(self, x: np.ndarray, batch: int = CALIB_BATCH):
        self._batches = [x[i:i + batch] for i in range(0, len(x), batch)]
        self._pos = 0

    def get_next(self) -> dict[str, np.ndarray] | None:
        if self._pos >= len(self._batches):
            return None
        self._pos += 1
        return {INPUT_NAME: np.ascontiguousarray(self._batches[self._pos - 1])}

    def rewind(self) -> None:
        self._pos = 0


def to_int8(fp32_path: str | Path, card: ModelCard, calib: CalibrationSet) -> "onnx.ModelProto":
    """Static QDQ int8 of the fp32 file at ``fp32_path``, calibrated on ``calib``."""
    import onnx
    from onnxruntime.quantization import (CalibrationDataReader, CalibrationMethod, QuantFormat,
                                          QuantType, quant_pre_process, quantize_static)

    class Reader(_ArrayReader, CalibrationDataReader):
        pass

    reader = Reader(calib.x)
    with tempfile.TemporaryDirectory(prefix="bonedeploy-int8-") as tmp:
        pre, out = Path(tmp) / "pre.onnx", Path(tmp) / "int8.onnx"
        # The exported graph has one symbolic axis (batch) that onnx's shape inference handles;
        # the symbolic pass only adds minutes on a 590 MB AlexNet.
        quant_pre_process(str(fp32_path), str(pre), skip_symbolic_shape=True)
        # BatchNormalization stays float (AlexNet's BN follows a pool, so it is not folded):
        # per-channel int8 of its 1-D scale is not meaningful and only warns.
        pre_model = onnx.load(str(pre))
        bn = [n.name for n in pre_model.graph.node if n.op_type == "BatchNormalization"]
        quantize_static(
            pre_model, str(out), reader, quant_format=QuantFormat.QDQ, per_channel=True,
            nodes_to_exclude=bn,
            activation_type=QuantType.QInt8, weight_type=QuantType.QInt8,
            calibrate_method=CalibrationMethod.MinMax,
            # QuantizeBias=False: TensorRT's parser rejects DequantizeLinear on int32 biases
            # ("only activation types allowed as input to this layer"); onnxruntime's CPU EP ran
            # the float-bias graph as fast here (AlexNet, batch 8). MinMax keeps only per-batch
            # ReduceMin/ReduceMax results, so memory stays small (CalibMaxIntermediateOutputs is
            # not used: onnxruntime 1.32 discards the batches it counts).
            extra_options={"ActivationSymmetric": True, "WeightSymmetric": True, "QuantizeBias": False},
        )
        model = onnx.load(str(out))
    prune_opset_imports(model)
    strip_debug_info(model)
    set_card(model, card.with_(precision="int8", extra={**card.extra, "calibration": calib.describe()}))
    return model


def prune_opset_imports(model: "onnx.ModelProto") -> None:
    """onnxruntime's optimiser saves every domain it knows (com.microsoft.nchwc, ...); keep only
    those a node uses, so other runtimes (TensorRT's parser) see a plain ai.onnx graph."""
    used = {n.domain for n in model.graph.node} | {""}
    keep = [(o.domain, o.version) for o in model.opset_import if o.domain in used or o.domain == "ai.onnx"]
    del model.opset_import[:]
    for domain, version in keep:
        entry = model.opset_import.add()
        entry.domain, entry.version = domain, version
