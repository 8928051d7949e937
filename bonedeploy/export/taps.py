"""Run an artefact with chosen intermediate tensors exposed ("taps"), for ``bonedeploy compare``.

One tapper per runtime, chosen by suffix (a registry: a duplicate suffix raises):

- ``.onnx``: the graph with the tensors added as outputs, on onnxruntime's CPU provider with graph
  optimisations off (as onnxruntime's ``qdq_loss_debug`` runs it: a fused QDQ node has no float
  tensor left to read). The deployed session fuses; its logits are compared separately.
- ``.xml`` (OpenVINO IR): ``Model.add_outputs`` on the converter's tensor names (it keeps the
  ONNX names), compiled for the CPU.
- ``.pt``: forward hooks on the named modules of the loaded checkpoint (torch imported only here).

Where a layer's tensor is, is decided by the graph's structure, not by its name: a tensor consumed
by a QuantizeLinear whose DequantizeLinear output the next layers read is a QDQ tensor; its
*value* is that DequantizeLinear output and its *before* the float tensor (a local error pair).
OpenVINO's IR has no QuantizeLinear nodes left, so there the quantizer's own output names
(``X_DequantizeLinear_Output``, onnxruntime's ``quant_utils`` convention) are looked up instead.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from bonedeploy.errors import ArtefactError, BackendUnavailableError

DQ_OUTPUT_SUFFIX = "_DequantizeLinear_Output"  # onnxruntime.quantization.quant_utils names
Q_INPUT_SUFFIX = "_QuantizeLinear_Input"
_NOT_LAYERS = {"QuantizeLinear", "DequantizeLinear", "Cast", "Constant", "Identity", "Shape"}


@dataclass(frozen=True)
class Layer:
    """One comparable layer: its name in reports (a module path, or the tensor without a map),
    what it is, and the fp32 graph tensor its output becomes."""

    name: str
    kind: str
    tensor: str


@dataclass(frozen=True)
class Tap:
    value: str  # what the next layers read
    before: str | None = None  # the float tensor before QuantizeLinear (QDQ tensors only)


class Tapper(abc.ABC):
    suffixes: ClassVar[tuple[str, ...]]
    # One tensor per prepared run: exposing several at once changes what the runtime computes.
    isolated: ClassVar[bool] = False
    output_name: str | None = None  # the artefact's own output, returned by every isolated run

    def __init__(self, path: Path, backend: Any = None):
        self.path = Path(path)
        self.backend = backend  # the loaded Backend of this artefact (card, deployed run)

    def graph_layers(self) -> list[Layer]:
        """Layers read from the graph itself (used when no card records a module map)."""
        return []

    @abc.abstractmethod
    def locate(self, layer: Layer) -> Tap | str:
        """Where ``layer`` is in this artefact, or why it cannot be found (a sentence)."""

    @abc.abstractmethod
    def open(self, taps: list[Tap]) -> None:
        """Prepare a run that returns these tensors."""

    @abc.abstractmethod
    def run(self, x: np.ndarray) -> dict[str, np.ndarray]:
        """Tensor name -> value (batch first) for every tensor asked for in ``open``."""

    def close(self) -> None:
        pass


_TAPPERS: dict[str, type[Tapper]] = {}


def register_tapper(cls: type[Tapper]) -> type[Tapper]:
    for s in cls.suffixes:
        if s in _TAPPERS:
            raise ValueError(f"a tapper for {s!r} is already registered")
        _TAPPERS[s] = cls
    return cls


def tapper_for(path: Path, backend: Any) -> Tapper | None:
    """The tapper for ``path``'s kind, or ``None`` when its runtime exposes no intermediate
    tensors (a TensorRT engine: only its bindings)."""
    cls = _TAPPERS.get(Path(path).suffix.lower())
    return cls(path, backend) if cls else None


def tappable_suffixes() -> list[str]:
    return sorted(_TAPPERS)


@register_tapper
class OnnxTapper(Tapper):
    suffixes = (".onnx",)

    def __init__(self, path: Path, backend: Any = None):
        super().__init__(path, backend)
        import onnx

        try:
            self.proto = onnx.load(str(self.path))
        except Exception as e:  # noqa: BLE001 -- protobuf's DecodeError and friends
            raise ArtefactError(f"{self.path}: not a readable ONNX file ({e})") from e
        self.producer = {o: n for n in self.proto.graph.node for o in n.output}
        self.consumers: dict[str, list[Any]] = {}
        for n in self.proto.graph.node:
            for i in n.input:
                self.consumers.setdefault(i, []).append(n)
        self._session = None

    def graph_layers(self) -> list[Layer]:
        return [Layer(n.output[0], n.op_type, n.output[0]) for n in self.proto.graph.node
                if n.op_type not in _NOT_LAYERS and n.output]

    def locate(self, layer: Layer) -> Tap | str:
        t = layer.tensor
        if t not in self.producer:
            return f"no tensor {t!r} in {self.path.name} (fused away or renamed when it was built)"
        prod = self.producer[t]
        if prod.op_type == "DequantizeLinear":  # a graph output the quantizer renamed into place
            q = self.producer.get(prod.input[0])
            if q is not None and q.op_type == "QuantizeLinear":
                return Tap(t, q.input[0])
        for q in self.consumers.get(t, []):
            if q.op_type != "QuantizeLinear":
                continue
            dq = [c for c in self.consumers.get(q.output[0], []) if c.op_type == "DequantizeLinear"]
            if dq:
                return Tap(dq[0].output[0], t)
        return Tap(t)

    def open(self, taps: list[Tap]) -> None:
        import onnx
        import onnxruntime as ort

        proto = onnx.ModelProto()
        proto.CopyFrom(self.proto)
        have = {o.name for o in proto.graph.output}
        for name in dict.fromkeys(n for t in taps for n in (t.value, t.before) if n):
            if name not in have:
                proto.graph.output.append(onnx.ValueInfoProto(name=name))
        so = ort.SessionOptions()
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
        self._session = ort.InferenceSession(proto.SerializeToString(), so, providers=["CPUExecutionProvider"])
        self._input = self._session.get_inputs()[0].name
        self._names = [o.name for o in self._session.get_outputs()]

    def run(self, x: np.ndarray) -> dict[str, np.ndarray]:
        return dict(zip(self._names, self._session.run(None, {self._input: x})))

    def close(self) -> None:
        self._session = None


@register_tapper
class IrTapper(Tapper):
    """OpenVINO's CPU plugin fuses around quantised tensors differently once several of them are
    outputs (on a QDQ graph even the logits change), so each tensor is
    exposed in its own compiled model and checked against the deployed logits (``compare``)."""

    suffixes = (".xml",)
    isolated = True

    def __init__(self, path: Path, backend: Any = None):
        super().__init__(path, backend)
        try:
            import openvino as ov
        except ImportError as e:
            raise BackendUnavailableError(f"{path}: comparing OpenVINO IR needs OpenVINO "
                                          f"(pip install 'bonedeploy[openvino]'): {e}") from e
        self._core = ov.Core()
        self.model = self._core.read_model(str(self.path))
        self.names = {n for op in self.model.get_ordered_ops() for o in op.outputs() for n in o.get_names()}
        self.output_name = sorted(self.model.outputs[0].get_names())[0]
        self._compiled = None

    def locate(self, layer: Layer) -> Tap | str:
        t = layer.tensor
        if t + DQ_OUTPUT_SUFFIX in self.names:
            return Tap(t + DQ_OUTPUT_SUFFIX, t if t in self.names else None)
        if t in self.names:
            return Tap(t, t + Q_INPUT_SUFFIX if t + Q_INPUT_SUFFIX in self.names else None)
        return f"no tensor named {t!r} in {self.path.name} (OpenVINO fused or renamed it)"

    def open(self, taps: list[Tap]) -> None:
        wanted = set(n for t in taps for n in (t.value, t.before) if n) | {self.output_name}
        model = self._core.read_model(str(self.path))  # a fresh graph: outputs added before stay
        model.add_outputs(sorted(wanted - {self.output_name}))
        # the deployed backend's properties (inference precision above all: OpenVINO's own CPU
        # default is bf16 where the CPU has it), so a probe differs from the deployed run only by
        # its extra output
        config = self.backend.config() if hasattr(self.backend, "config") else {"INFERENCE_PRECISION_HINT": "f32"}
        self._compiled = self._core.compile_model(model, "CPU", config)
        # an output may carry several tensor names: return it under each one asked for
        self._outputs = [(o, sorted(o.get_names() & wanted)) for o in self._compiled.outputs]

    def run(self, x: np.ndarray) -> dict[str, np.ndarray]:
        res = self._compiled(x)
        return {name: np.asarray(res[o]) for o, names in self._outputs for name in names}

    def close(self) -> None:
        self._compiled = None


@register_tapper
class TorchTapper(Tapper):
    """Hooks on the modules of the loaded ``torch`` backend; its ``infer`` runs them."""

    suffixes = (".pt", ".pth")

    def locate(self, layer: Layer) -> Tap | str:
        modules = dict(self.backend.model.named_modules())
        if layer.name not in modules:
            return f"no module named {layer.name!r} in {self.path.name}"
        return Tap(layer.name)

    def open(self, taps: list[Tap]) -> None:
        modules = dict(self.backend.model.named_modules())
        self._seen: dict[str, np.ndarray] = {}
        self._handles = [modules[t.value].register_forward_hook(self._hook(t.value)) for t in taps]

    def _hook(self, name: str):
        def keep(_module, _inputs, output):
            # copied now: an in-place ReLU after this module overwrites the same storage
            self._seen[name] = output.detach().float().cpu().numpy().copy()
        return keep

    def run(self, x: np.ndarray) -> dict[str, np.ndarray]:
        self._seen = {}
        self.backend.infer(x)
        return dict(self._seen)

    def close(self) -> None:
        for h in getattr(self, "_handles", []):
            h.remove()
        self._handles = []
