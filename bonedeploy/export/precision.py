"""Reduced-precision ONNX variants: fp16 (onnxconverter-common) and int8 static QDQ
(onnxruntime.quantization), both with float32 input and output so every consumer feeds the same
tensor. TensorRT builds them strongly typed.

int8 choices: QDQ format (what TensorRT's explicit quantisation reads, and what onnxruntime's CPU
EP fuses into integer kernels), symmetric int8 weights (per channel by default), symmetric int8
activations (TensorRT requires zero points of 0), float biases (TensorRT cannot dequantize int32
ones), calibration (Percentile by default; MinMax and Entropy for the repair search,
``export.repair``) on preprocessed training images, after ``quant_pre_process`` (onnxruntime's
recommended graph optimisation + shape inference first). The recipe is recorded in the card
(``extra["quantization"]``).
"""

from __future__ import annotations

import hashlib
import inspect
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from bonedeploy.artefacts.card import ModelCard
from bonedeploy.errors import ConfigError, DataError
from bonedeploy.export.onnx import INPUT_NAME, set_card, strip_debug_info
from bonedeploy.util.fs import sha256_file
from bonedeploy.data.preprocess import PreprocessSpec

if TYPE_CHECKING:  # pragma: no cover
    import onnx

MIN_CALIBRATION = 32
MAX_CALIBRATION = 64  # ranges settle well before; more only costs CPU time and memory
CALIB_BATCH = 8


def to_fp16(fp32: "onnx.ModelProto", card: ModelCard, fp32_nodes: tuple[str, ...] = ()) -> "onnx.ModelProto":
    """Weights and activations in float16, float32 ``image``/``logits`` kept (casts at the edges);
    ``fp32_nodes`` stay float32 (the converter casts around them: the repair's float islands), and
    so does the OOD head (``ood_score`` reaches 1e5 and more, beyond float16)."""
    import onnx
    from onnxconverter_common import float16

    from bonedeploy.export.onnx import ood_nodes

    model = onnx.ModelProto()
    model.CopyFrom(fp32)
    keep32 = list(fp32_nodes) + sorted(ood_nodes(fp32.graph) - set(fp32_nodes))
    with warnings.catch_warnings():  # one "truncated to 1e-07" warning per tiny weight: noise
        warnings.filterwarnings("ignore", message=".*will be truncated to.*", category=UserWarning)
        model = float16.convert_float_to_float16(model, keep_io_types=True,
                                                 node_block_list=keep32 or None)
    if keep32:
        _fp32_islands(model, fp32, set(keep32))
    strip_debug_info(model)
    extra = {**card.extra, "fp32_nodes": list(fp32_nodes)} if fp32_nodes else card.extra
    set_card(model, card.with_(precision="fp16", extra=extra))
    return model


def _fp32_islands(model: "onnx.ModelProto", fp32: "onnx.ModelProto", nodes: set[str]) -> None:
    """Make ``node_block_list`` nodes truly float32. onnxconverter-common casts a blocked node's
    inputs up and its outputs down, and stores its weights in float16 (clamped to 1e4) all the
    same: a tensor passed between two blocked nodes still goes through float16 and overflows. Here
    a blocked node reads its weights as the fp32 file holds them and a blocked producer's output
    directly; casts nobody reads any more are dropped."""
    from onnx import TensorProto

    g = model.graph
    producer = {o: n for n in g.node for o in n.output}
    weights32 = {i.name: i for i in fp32.graph.initializer}
    inits16 = {i.name for i in g.initializer}
    added: set[str] = set()
    for node in (n for n in g.node if n.name in nodes):
        for k, name in enumerate(node.input):
            cast = producer.get(name)
            if cast is None or cast.op_type != "Cast":
                continue
            src = cast.input[0]
            if src in inits16 and src in weights32:  # a weight cast back up from float16
                keep = f"{src}_fp32"
                if keep not in added:
                    w = g.initializer.add()
                    w.CopyFrom(weights32[src])
                    w.name = keep
                    added.add(keep)
                node.input[k] = keep
                continue
            down = producer.get(src)  # blocked -> Cast(float16) -> Cast(float) -> blocked
            to = next((a.i for a in down.attribute if a.name == "to"), None) if down is not None else None
            if down is not None and down.op_type == "Cast" and to == TensorProto.FLOAT16:
                up = producer.get(down.input[0])
                if up is not None and up.name in nodes:
                    node.input[k] = down.input[0]
    _float32_outputs(g, fp32)
    _drop_unread(g)


def _float32_outputs(g, fp32: "onnx.ModelProto") -> None:
    """A blocked last node leaves the graph output cast down to float16: cast it to float32."""
    from onnx import TensorProto

    want = {o.name: o.type.tensor_type.elem_type for o in fp32.graph.output}
    for out in g.output:
        if want.get(out.name) == TensorProto.FLOAT and out.type.tensor_type.elem_type != TensorProto.FLOAT:
            cast = next(n for n in g.node if out.name in n.output)
            for a in cast.attribute:
                if a.name == "to":
                    a.i = TensorProto.FLOAT
            out.type.tensor_type.elem_type = TensorProto.FLOAT


def _drop_unread(g) -> None:
    outputs = {o.name for o in g.output}
    while True:
        read = {i for n in g.node for i in n.input} | outputs
        dead = [n for n in g.node if n.op_type == "Cast" and not any(o in read for o in n.output)]
        if not dead:
            break
        for n in dead:
            g.node.remove(n)
    read = {i for n in g.node for i in n.input}
    for init in [i for i in g.initializer if i.name not in read]:
        g.initializer.remove(init)


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


CALIBRATION_METHODS = ("MinMax", "Entropy", "Percentile")
# The recipe with the smallest probability error on the parity set of the demo model and the most
# agreement on the planted one; every recipe there is gated (benchmarks/precision.py).
DEFAULT_CALIBRATION = "Percentile"


@dataclass(frozen=True)
class QuantOptions:
    """One int8 recipe: how activation ranges are calibrated, int8 weights per output channel or
    per tensor, and which nodes of the pre-processed graph stay float (``nodes_to_exclude``)."""

    calibration: str = DEFAULT_CALIBRATION
    per_channel: bool = True
    float_nodes: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.calibration not in CALIBRATION_METHODS:
            raise ConfigError(f"calibration method {self.calibration!r}; valid: {', '.join(CALIBRATION_METHODS)}")
        object.__setattr__(self, "float_nodes", tuple(self.float_nodes))

    def describe(self) -> dict[str, Any]:
        """What the int8 card and export.json record."""
        return {"calibration_method": self.calibration, "per_channel": self.per_channel,
                "float_nodes": list(self.float_nodes)}

    def label(self) -> str:
        kept = f", {len(self.float_nodes)} node(s) float" if self.float_nodes else ""
        return f"{self.calibration} {'per-channel' if self.per_channel else 'per-tensor'}{kept}"


class Int8Builder:
    """Quantises one fp32 file many ways. The pre-processed graph, and each calibration method's
    activation ranges (onnxruntime's calibration cache), are computed once in ``workdir`` and
    reused by every recipe: the repair search rebuilds the graph, not the calibration."""

    def __init__(self, fp32_path: str | Path, card: ModelCard, calib: CalibrationSet, workdir: str | Path,
                 refit: Any = None):
        self.fp32_path, self.card, self.calib = Path(fp32_path), card, calib
        self.workdir = Path(workdir)
        self.refit = refit  # export.ood_refit.RefitData: every int8 graph gets its own OOD gate
        self._pre: Path | None = None
        self._bn: tuple[str, ...] | None = None

    @property
    def pre_path(self) -> Path:
        """The graph the quantizer reads (its node names are what ``float_nodes`` holds)."""
        if self._pre is None:
            from onnxruntime.quantization import quant_pre_process

            pre = self.workdir / "pre.onnx"
            if not pre.is_file():  # another builder on the same workdir made it already
                # The exported graph has one symbolic axis (batch) that onnx's shape inference
                # handles; the symbolic pass only adds minutes on a 590 MB AlexNet.
                quant_pre_process(str(self.fp32_path), str(pre), skip_symbolic_shape=True)
            self._pre = pre
        return self._pre

    @property
    def always_float(self) -> tuple[str, ...]:
        """BatchNormalization stays float (AlexNet's BN follows a pool, so it is not folded):
        per-channel int8 of its 1-D scale is not meaningful and only warns. So does the OOD head
        (``export.onnx.ood_nodes``): its scores span 1e-3 to 1e30, which no int8 scale holds."""
        if self._bn is None:
            import onnx

            from bonedeploy.export.onnx import ood_nodes

            graph = onnx.load(str(self.pre_path), load_external_data=False).graph
            self._bn = tuple(n.name for n in graph.node if n.op_type == "BatchNormalization")
            self._bn += tuple(sorted(ood_nodes(graph)))
        return self._bn

    def build(self, options: QuantOptions = QuantOptions()) -> "onnx.ModelProto":
        import onnx

        out = self.workdir / "int8.onnx"
        self._quantize(options, out)
        model = onnx.load(str(out))
        out.unlink()
        head_reads_float_inputs(model.graph)
        prune_opset_imports(model)
        strip_debug_info(model)
        extra = {**self.card.extra, "calibration": self.calib.describe(), "quantization": options.describe()}
        set_card(model, self.card.with_(precision="int8", extra=extra))
        if self.refit is not None:
            from bonedeploy.export.ood_refit import refit

            refit(model, self.refit)
        return model

    def _quantize(self, options: QuantOptions, out: Path) -> None:
        from onnxruntime.quantization import (CalibrationDataReader, CalibrationMethod, QuantFormat,
                                              QuantType, quantize_static)

        class Reader(_ArrayReader, CalibrationDataReader):
            pass

        cache = {}
        if "calibration_cache_path" in inspect.signature(quantize_static).parameters:  # onnxruntime >= 1.24
            cache["calibration_cache_path"] = str(self.workdir / f"ranges-{options.calibration}.json")
        quantize_static(  # from the path: a ModelProto costs a save and reload of the whole model
            str(self.pre_path), str(out), Reader(self.calib.x), quant_format=QuantFormat.QDQ,
            per_channel=options.per_channel, nodes_to_exclude=sorted(set(self.always_float) | set(options.float_nodes)),
            activation_type=QuantType.QInt8, weight_type=QuantType.QInt8,
            calibrate_method=getattr(CalibrationMethod, options.calibration),
            # QuantizeBias=False: TensorRT's parser rejects DequantizeLinear on int32 biases
            # ("only activation types allowed as input to this layer"); onnxruntime's CPU EP ran
            # the float-bias graph as fast here (AlexNet, batch 8). MinMax keeps only per-batch
            # ReduceMin/ReduceMax results, so memory stays small (CalibMaxIntermediateOutputs is
            # not used: onnxruntime 1.32 discards the batches it counts).
            extra_options={"ActivationSymmetric": True, "WeightSymmetric": True, "QuantizeBias": False},
            **cache,
        )


def head_reads_float_inputs(graph) -> int:
    """The OOD head reads the model's float input itself, not the quantizer's DequantizeLinear of
    it. Sharing that pair with the first conv kept onnxruntime from fusing the conv into
    QLinearConv (its int8-to-uint8 rewrite wants the pair to itself): the conv ran in float, ~7%
    of int8 batch-8 throughput on AlexNet (benchmarks/ood.py). The head's input check then also
    reads the exact pixels. Returns the head inputs rewired."""
    from bonedeploy.export.onnx import ood_nodes

    head = ood_nodes(graph)
    if not head:
        return 0
    inputs = {i.name for i in graph.input}
    producer = {o: n for n in graph.node for o in n.output}

    def float_source(name: str) -> str | None:
        dq = producer.get(name)
        q = producer.get(dq.input[0]) if dq is not None and dq.op_type == "DequantizeLinear" else None
        if q is not None and q.op_type == "QuantizeLinear" and q.input[0] in inputs:
            return q.input[0]
        return None

    rewired = 0
    for node in graph.node:
        if node.name in head:
            for k, name in enumerate(node.input):
                if (src := float_source(name)) is not None:
                    node.input[k] = src
                    rewired += 1
    return rewired


def to_int8(fp32_path: str | Path, card: ModelCard, calib: CalibrationSet,
            options: QuantOptions = QuantOptions()) -> "onnx.ModelProto":
    """Static QDQ int8 of the fp32 file at ``fp32_path``, calibrated on ``calib``."""
    with tempfile.TemporaryDirectory(prefix="bonedeploy-int8-") as tmp:
        return Int8Builder(fp32_path, card, calib, tmp).build(options)


def prune_opset_imports(model: "onnx.ModelProto") -> None:
    """onnxruntime's optimiser saves every domain it knows (com.microsoft.nchwc, ...); keep only
    those a node uses, so other runtimes (TensorRT's parser) see a plain ai.onnx graph."""
    used = {n.domain for n in model.graph.node} | {""}
    keep = [(o.domain, o.version) for o in model.opset_import if o.domain in used or o.domain == "ai.onnx"]
    del model.opset_import[:]
    for domain, version in keep:
        entry = model.opset_import.add()
        entry.domain, entry.version = domain, version
