"""Which ONNX tensor each PyTorch module's output becomes, recorded at export time.

The dynamo exporter tags every node with the module scopes it came from
(``pkg.torch.onnx.name_scopes``: ``['', 'layers', 'layers.0', 'layers.0.0', 'layers.0.0.bn1',
'<op>']``) and its class hierarchy. ``export_fp32`` strips that metadata (it holds local paths), so
the map is read first and kept in the model card (``extra["layers"]``), where fp16, int8, OpenVINO
IR and the TensorRT sidecar inherit it. ``bonedeploy compare`` pairs tensors through it: a module
name for a ``.pt`` (a forward hook), its tensor for a graph. Quantizers keep tensor names, so the
map stays valid in every file derived from the fp32 one.

A module's output is the output of its last node in graph order (a block's last op is its
residual add or final ReLU). Modules with no node (Dropout at inference, a BatchNorm folded into
the convolution before it) have no entry: there is no tensor to compare.
"""

from __future__ import annotations

import ast
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    import onnx

CARD_KEY = "layers"
_SCOPES = "pkg.torch.onnx.name_scopes"
_CLASSES = "pkg.torch.onnx.class_hierarchy"


def module_outputs(proto: "onnx.ModelProto") -> list[dict[str, Any]]:
    """``[{"module", "type", "op", "tensor"}]`` in network order; empty when the exporter left no
    scope metadata (then ``compare`` pairs graphs by tensor and cannot pair a ``.pt``)."""
    last: dict[str, tuple[int, dict[str, Any]]] = {}
    for i, node in enumerate(proto.graph.node):
        meta = {p.key: p.value for p in node.metadata_props}
        scopes = _literal(meta.get(_SCOPES))
        if len(scopes) < 2 or not scopes[-2] or not node.output:
            continue  # no scope, or an op of the root module itself
        classes = _literal(meta.get(_CLASSES))
        kind = str(classes[-2]).rsplit(".", 1)[-1] if len(classes) >= 2 else node.op_type
        last[scopes[-2]] = (i, {"module": scopes[-2], "type": kind, "op": node.op_type,
                                "tensor": node.output[0]})
    return [entry for _, entry in sorted(last.values(), key=lambda t: t[0])]


def _literal(text: str | None) -> list[Any]:
    if not text:
        return []
    try:
        value = ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return []
    return list(value) if isinstance(value, (list, tuple)) else []
