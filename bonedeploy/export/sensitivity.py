"""Rank a reduced-precision graph's nodes by the error their own rounding adds: the repair's
candidates for float islands, most harmful first.

A node's local error is the sum of the per-channel noise-to-signal ratios (``ChannelNoise``) of
every tensor whose rounding keeping it float removes: for int8, the QDQ pairs it reads and writes
(measured on the images, as ``bonedeploy compare``'s local column) and its int8 weights against
the float ones; for fp16, float16 rounding of its activations (an overflow is infinite) and of
its weights as the converter stores them. One tapped run of the graph, no gate checks.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

from bonedeploy.eval.layerwise import ChannelNoise, fp16_rounding, sqnr_db
from bonedeploy.export.onnx import OOD_PREFIX
from bonedeploy.export.taps import OnnxTapper, Tap

_SKIP = {"QuantizeLinear", "DequantizeLinear", "Cast", "Constant", "Identity", "Shape",
         "BatchNormalization"}  # BatchNormalization is never quantised (export.precision)
# The OOD head (``ood/`` nodes) is float in every precision already: never a candidate.
FP16_MIN, FP16_MAX = 1e-7, 1e4  # onnxconverter-common's clamp of weights (min_positive_val, max_finite_val)


def rank_int8(int8_path: Path, pre_path: Path, x: np.ndarray, layers: dict[str, str], batch: int = 8
              ) -> list[dict[str, Any]]:
    """Nodes of the QDQ file (named as in the pre-processed graph, ``nodes_to_exclude``'s names)."""
    import onnx
    from onnx import numpy_helper

    g = OnnxTapper(int8_path)
    pairs = _qdq_pairs(g)  # float tensor -> its DequantizeLinear output
    noise = _measure(g, [Tap(dq, t) for t, dq in pairs.items()], x, batch,
                     lambda out, tap: (out[tap.before], out[tap.value]))
    act = {t: noise[pairs[t]].nsr() for t in pairs}
    pre = onnx.load(str(pre_path))
    pre_nodes = {n.name: n for n in pre.graph.node}
    pre_inits = {i.name: i for i in pre.graph.initializer}
    inits = {i.name: i for i in g.proto.graph.initializer}
    rows = []
    for node in g.proto.graph.node:
        if node.op_type in _SKIP or node.name not in pre_nodes or node.name.startswith(OOD_PREFIX):
            continue
        parts: dict[str, float] = {}
        for i, t in enumerate(node.input):
            src = _float_source(g, t)
            if src in act:
                parts[src] = act[src]
            elif _dequantized_initializer(g, t, inits) and i < len(pre_nodes[node.name].input):
                w = pre_inits.get(pre_nodes[node.name].input[i])
                if w is not None:
                    parts[f"{w.name} (weights)"] = _weight_nsr(g, t, inits, numpy_helper.to_array(w))
        for t in node.output:
            if t in act:
                parts[t] = act[t]
        if parts:
            rows.append(_row(node, parts, layers))
    return _ranked(rows)


def rank_fp16(fp32_path: Path, x: np.ndarray, layers: dict[str, str], batch: int = 8) -> list[dict[str, Any]]:
    """Nodes of the fp32 file (``node_block_list``'s names) by the damage float16 storage does."""
    from onnx import numpy_helper

    g = OnnxTapper(fp32_path)
    inits = {i.name: i for i in g.proto.graph.initializer}
    tensors = {t for n in g.proto.graph.node if n.op_type not in _SKIP - {"BatchNormalization"}
               for t in n.output}
    noise = _measure(g, [Tap(t) for t in sorted(tensors)], x, batch,
                     lambda out, tap: (out[tap.value], fp16_rounding(out[tap.value])))
    act = {t: noise[t].nsr() for t in tensors}
    act[g.proto.graph.input[0].name] = 0.0  # the input is cast to float16 by the converter
    rows = []
    for node in g.proto.graph.node:
        if node.op_type in _SKIP - {"BatchNormalization"} or node.name.startswith(OOD_PREFIX):
            continue
        parts: dict[str, float] = {}
        for t in node.input:
            if t in act:
                parts[t] = act[t]
            elif t in inits:
                w = numpy_helper.to_array(inits[t])
                if w.dtype.kind == "f" and w.size > 1:
                    parts[f"{t} (weights)"] = _fp16_weight_nsr(w)
        for t in node.output:
            parts.setdefault(t, act.get(t, 0.0))
        rows.append(_row(node, parts, layers))
    return _ranked(rows)


def _qdq_pairs(g: OnnxTapper) -> dict[str, str]:
    out = {}
    for q in g.proto.graph.node:
        if q.op_type != "QuantizeLinear":
            continue
        dq = [c for c in g.consumers.get(q.output[0], []) if c.op_type == "DequantizeLinear"]
        if dq:
            out[q.input[0]] = dq[0].output[0]
    return out


def _float_source(g: OnnxTapper, t: str) -> str:
    """The float tensor behind a DequantizeLinear output (itself when it is not one)."""
    dq = g.producer.get(t)
    if dq is None or dq.op_type != "DequantizeLinear":
        return t
    q = g.producer.get(dq.input[0])
    return q.input[0] if q is not None and q.op_type == "QuantizeLinear" else dq.input[0]


def _dequantized_initializer(g: OnnxTapper, t: str, inits: dict[str, Any]) -> bool:
    dq = g.producer.get(t)
    return dq is not None and dq.op_type == "DequantizeLinear" and dq.input[0] in inits


def _measure(g: OnnxTapper, taps: list[Tap], x: np.ndarray, batch: int, pair) -> dict[str, ChannelNoise]:
    noise = {t.value: ChannelNoise() for t in taps}
    if not taps:
        return noise
    g.open(taps)
    try:
        for i in range(0, len(x), batch):
            out = g.run(np.ascontiguousarray(x[i:i + batch]))
            for tap in taps:
                noise[tap.value].add(*pair(out, tap))
    finally:
        g.close()
    return noise


def _weight_nsr(g: OnnxTapper, t: str, inits: dict[str, Any], w: np.ndarray) -> float:
    """Per-output-channel NSR of the DequantizeLinear'd int8 weights against the float ones."""
    from onnx import numpy_helper

    dq = g.producer[t]
    q = numpy_helper.to_array(inits[dq.input[0]]).astype(np.float64)
    scale = numpy_helper.to_array(inits[dq.input[1]]).astype(np.float64)
    zero = numpy_helper.to_array(inits[dq.input[2]]).astype(np.float64) if len(dq.input) > 2 else 0.0
    axis = next((a.i for a in dq.attribute if a.name == "axis"), 1)
    if np.ndim(scale) == 1:
        shape = [1] * q.ndim
        shape[axis] = -1
        scale, zero = scale.reshape(shape), np.reshape(zero, shape) if np.ndim(zero) else zero
    deq = (q - zero) * scale
    if deq.shape != w.shape:
        return 0.0
    axis = axis if np.ndim(scale) and q.ndim > 1 else 0
    ch = ChannelNoise()
    ch.add(np.moveaxis(w, axis, 0)[None], np.moveaxis(deq, axis, 0)[None])
    return ch.nsr()


def _fp16_weight_nsr(w: np.ndarray) -> float:
    stored = np.sign(w) * np.clip(np.abs(w), FP16_MIN, FP16_MAX)
    stored = np.where(w == 0, 0.0, stored)
    ch = ChannelNoise()
    ch.add(w[None].reshape(1, w.shape[0], -1), fp16_rounding(stored.astype(np.float32))[None].reshape(1, w.shape[0], -1))
    return ch.nsr()


def _row(node: Any, parts: dict[str, float], layers: dict[str, str]) -> dict[str, Any]:
    score = float(sum(parts.values()))
    layer = next((layers[t] for t in node.output if t in layers), None)
    return {"node": node.name, "op": node.op_type, "layer": layer, "score": score,
            "local_channel_sqnr_db": _db(score),
            "tensors": {k: _db(v) for k, v in sorted(parts.items(), key=lambda kv: -kv[1])}}


def _ranked(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Most harmful first; nodes whose rounding adds nothing are not candidates."""
    return sorted((r for r in rows if r["score"] > 0), key=lambda r: -r["score"])


def _db(nsr: float) -> float | str | None:
    v = sqnr_db(1.0, nsr)
    return "-inf" if v is not None and math.isinf(v) else v
