"""PyTorch -> ONNX fp32, plus the checks and metadata every exported ONNX file gets.

Exporter choice: ``torch.onnx.export(..., dynamo=True)`` (the torch.export-based exporter, the
default since PyTorch 2.9). The legacy TorchScript exporter (``dynamo=False``) still works in torch
2.14 but warns that it will be removed. The dynamo exporter gives a checker-clean graph with a
symbolic batch axis, folds BatchNorm into the convolutions, and its bytes are identical for the
same weights once we (a) keep the weights inside the file (``external_data=False``; the only
difference between two runs was the external-data file name) and (b) strip the per-node debug
metadata it records (stack traces with this checkout's absolute paths), so the same checkpoint
gives the same sha256 on any machine with the same library versions.

Opset 18 is the exporter's native opset; 17 is accepted (onnx's version converter runs).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from bonedeploy.artefacts.card import ModelCard
from bonedeploy.artefacts.ood import OOD_OUTPUT
from bonedeploy.errors import ArtefactError, ConfigError
from bonedeploy.util.fs import atomic_path, require_file

if TYPE_CHECKING:  # pragma: no cover
    import onnx

DEFAULT_OPSET = 18
MIN_OPSET = 17
MAX_OPSET = 23
INPUT_NAME = "image"
OUTPUT_NAME = "logits"
BATCH_DIM = "batch"
_PROTOBUF_LIMIT = 2**31 - 1  # one ONNX file without external data


def validate_opset(opset: int) -> int:
    if not MIN_OPSET <= int(opset) <= MAX_OPSET:
        raise ConfigError(f"--opset {opset}: valid opsets are {MIN_OPSET}..{MAX_OPSET} "
                          f"(default {DEFAULT_OPSET})")
    return int(opset)


def export_fp32(model: Any, card: ModelCard, opset: int = DEFAULT_OPSET) -> "onnx.ModelProto":
    """The model in eval mode as an fp32 ``ModelProto``: input ``image`` N x C x H x W float32
    with a dynamic batch axis, output ``logits`` N x classes (and ``ood_score`` N when ``model`` is
    a ``ScoredModel``: the card's OOD gate, computed in the graph), card in ``metadata_props``."""
    import torch

    from bonedeploy.models.ood import ScoredModel

    opset = validate_opset(opset)
    model = model.eval()  # dropout off, BatchNorm on running stats: the export never sees training
    outputs = [OUTPUT_NAME, OOD_OUTPUT] if isinstance(model, ScoredModel) else [OUTPUT_NAME]
    example = torch.zeros(2, *card.preprocess.input_shape, dtype=torch.float32)
    batch = torch.export.Dim(BATCH_DIM, min=1)
    with torch.no_grad():
        program = torch.onnx.export(
            model, (example,), None, input_names=[INPUT_NAME], output_names=outputs,
            opset_version=opset, dynamo=True, dynamic_shapes=({0: batch},),
            external_data=False, optimize=True, verbose=False,
        )
    proto = program.model_proto
    from bonedeploy.export.layermap import CARD_KEY, module_outputs

    layers = module_outputs(proto)  # before the scope metadata is stripped (``bonedeploy compare``)
    if len(outputs) > 1:  # the classifier's modules under their own names, as in the .pt
        layers = [{**e, "module": e["module"].removeprefix("model.")} for e in layers
                  if e["module"].startswith("model.")]
        name_ood_nodes(proto)
    strip_debug_info(proto)
    card = card.with_(precision="fp32", extra={**card.extra, "opset": opset,
                                                "exporter": f"torch.onnx dynamo (torch {torch.__version__})",
                                                CARD_KEY: layers})
    set_card(proto, card)
    return proto


def ood_nodes(graph: "onnx.GraphProto") -> set[str]:
    """Names of the nodes that only ``ood_score`` needs (the OOD head): what reduced precision
    leaves in float32, located by the graph itself (no exporter metadata needed)."""
    nodes = list(graph.node)
    producer = {o: i for i, n in enumerate(nodes) for o in n.output}

    def needed_by(output: str) -> set[int]:
        seen, todo = set(), [output]
        while todo:
            i = producer.get(todo.pop())
            if i is not None and i not in seen:
                seen.add(i)
                todo.extend(nodes[i].input)
        return seen

    if OOD_OUTPUT not in {o.name for o in graph.output}:
        return set()
    return {nodes[i].name for i in needed_by(OOD_OUTPUT) - needed_by(OUTPUT_NAME)}


OOD_PREFIX = "ood/"  # node names of the OOD head in every exported graph
FEATURES = "ood_features"  # the head's pooled features: the tensor an int8 refit reads (export.ood_refit)


def name_ood_nodes(proto: "onnx.ModelProto") -> None:
    """Prefix the OOD head's nodes with ``ood/`` (unique, readable names in reports) and name its
    pooled features ``ood_features``: the head's ReduceMean over a tensor the classifier computes."""
    heads = ood_nodes(proto.graph)
    produced_by_trunk = {o for n in proto.graph.node if n.name not in heads for o in n.output}
    for node in proto.graph.node:
        if node.name not in heads:
            continue
        if node.op_type == "ReduceMean" and node.input[0] in produced_by_trunk:
            _rename_tensor(proto.graph, node.output[0], FEATURES)
        if not node.name.startswith(OOD_PREFIX):
            node.name = OOD_PREFIX + node.name


def _rename_tensor(graph: "onnx.GraphProto", old: str, new: str) -> None:
    for node in graph.node:
        node.input[:] = [new if i == old else i for i in node.input]
        node.output[:] = [new if o == old else o for o in node.output]
    for info in graph.value_info:
        if info.name == old:
            info.name = new


def strip_debug_info(proto: "onnx.ModelProto") -> None:
    """Drop exporter debug metadata (stack traces, FX node names) and doc strings from the graph:
    they hold local paths and make bytes differ between checkouts. Model-level props are kept."""
    g = proto.graph
    for node in g.node:
        node.doc_string = ""
        del node.metadata_props[:]
    for coll in (g.input, g.output, g.value_info, g.initializer):
        for item in coll:
            if hasattr(item, "metadata_props"):
                del item.metadata_props[:]
            if hasattr(item, "doc_string"):
                item.doc_string = ""
    if hasattr(g, "metadata_props"):
        del g.metadata_props[:]
    g.doc_string = ""


def set_card(proto: "onnx.ModelProto", card: ModelCard) -> None:
    """Replace the ``bonedeploy.*`` metadata_props with ``card`` (sorted: stable bytes)."""
    from bonedeploy.artefacts.card import PREFIX

    keep = [(p.key, p.value) for p in proto.metadata_props if not p.key.startswith(PREFIX)]
    del proto.metadata_props[:]
    for k, v in sorted(keep + list(card.to_props().items())):
        entry = proto.metadata_props.add()
        entry.key, entry.value = k, v


def read_card(proto: "onnx.ModelProto", where: str = "model.onnx") -> ModelCard:
    return ModelCard.from_props({p.key: p.value for p in proto.metadata_props}, where)


def check_onnx(proto: "onnx.ModelProto", where: str | Path) -> None:
    """``onnx.checker`` full check, strict shape inference, and our IO contract; one-line
    ``ArtefactError`` naming ``where`` and the cause."""
    import onnx

    try:  # full_check includes strict, type-checked shape inference
        onnx.checker.check_model(proto, full_check=True)
    except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError, ValueError) as e:
        raise ArtefactError(f"{where}: fails the ONNX checker ({_first_line(e)})") from e
    check_io(proto, where)


def check_io(proto: "onnx.ModelProto", where: str | Path) -> None:
    """One float32 4-D input ``image`` with a symbolic batch axis, one float32 output ``logits``
    and, with an OOD gate, a second float32 output ``ood_score``."""
    import onnx

    g = proto.graph
    inits = {i.name for i in g.initializer}
    inputs = [i for i in g.input if i.name not in inits]
    expected = (OUTPUT_NAME, OOD_OUTPUT)[:len(g.output)]
    if len(inputs) != 1 or not 1 <= len(g.output) <= 2:
        raise ArtefactError(f"{where}: expected one input and one or two outputs, found "
                            f"{[i.name for i in inputs]} -> {[o.name for o in g.output]}")
    for vi, name in ((inputs[0], INPUT_NAME), *zip(g.output, expected)):
        t = vi.type.tensor_type
        if vi.name != name or t.elem_type != onnx.TensorProto.FLOAT:
            raise ArtefactError(f"{where}: {vi.name!r} is {onnx.TensorProto.DataType.Name(t.elem_type)}; "
                                f"expected float32 {name!r} (was it exported by bonedeploy?)")
    dims = inputs[0].type.tensor_type.shape.dim
    if len(dims) != 4 or not dims[0].dim_param:
        raise ArtefactError(f"{where}: input 'image' must be N x C x H x W with a dynamic batch axis")


def input_shape(proto: "onnx.ModelProto") -> tuple[int, ...]:
    """C x H x W of the input (for the engine's optimisation profile)."""
    dims = proto.graph.input[0].type.tensor_type.shape.dim
    return tuple(int(d.dim_value) for d in dims[1:])


def load_onnx(path: str | Path) -> "onnx.ModelProto":
    """Read and check an ONNX file; every failure is one ``ArtefactError`` line naming it."""
    import onnx
    from google.protobuf.message import DecodeError

    path = require_file(path, ArtefactError)
    try:
        proto = onnx.load(str(path))
    except (DecodeError, OSError, ValueError, RuntimeError) as e:
        raise ArtefactError(f"{path}: not a readable ONNX file, truncated or corrupt ({_first_line(e)})") from e
    check_onnx(proto, path)
    return proto


def save_onnx(proto: "onnx.ModelProto", path: str | Path) -> Path:
    """Write one self-contained file atomically (temp name, then rename)."""
    import onnx

    path = Path(path)
    if proto.ByteSize() > _PROTOBUF_LIMIT:
        raise ArtefactError(f"{path}: the model is over 2 GiB, which one ONNX file cannot hold")
    with atomic_path(path) as tmp:
        onnx.save_model(proto, str(tmp))
    return path


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return (text.splitlines()[0] if text else type(e).__name__)[:240]
