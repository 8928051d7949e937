"""The engine half of ``bonedeploy export``: build a TensorRT engine from an exported ONNX file
when TensorRT and a GPU are here, or say why not and print the command for the target device.

``export_engine_only`` handles ``bonedeploy export model.fp16.onnx`` (on a Jetson or GPU server):
check the file, build the engine, and gate it against the same ONNX file run with onnxruntime on
the CPU over synthetic radiographs (no checkpoint there to compare with).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from bonedeploy.errors import BackendUnavailableError
from bonedeploy.artefacts.naming import engine_path_for
from bonedeploy.util.fs import sha256_file, write_json


def maybe_build_engine(config, result, onnx_path: Path, card, bundle: tuple, log) -> None:
    """Fill ``result.engine`` (built, or skipped with the reason and the command to run) and,
    when built, gate the engine against the reference logits in ``bundle``."""
    from bonedeploy.export.from_checkpoint import engine_command
    from bonedeploy.export.tensorrt import tensorrt_available

    skipped = {"built": False, "from": onnx_path.name, "command": engine_command(onnx_path, config)}
    if config.trt is False:
        result.engine = {**skipped, "reason": "--no-trt"}
        return
    ok, why = tensorrt_available()
    if not ok:
        result.engine = {**skipped, "reason": why}
        if config.trt:  # --trt asked for an engine: the ONNX files stay, the run fails
            result.engine.update(error=f"no engine built: {why}", unavailable=True)
        return
    build_and_gate(config, result, onnx_path, card, bundle, log)


def build_and_gate(config, result, onnx_path: Path, card, bundle: tuple, log) -> None:
    from bonedeploy.errors import BonedeployError
    from bonedeploy.eval.decision import rule_for
    from bonedeploy.export.from_checkpoint import gate_file
    from bonedeploy.export.tensorrt import build_engine

    x, labels, paths, ref = bundle
    engine = engine_path_for(onnx_path, result.out_dir)
    try:
        built = build_engine(onnx_path, engine, card, config.batch, config.workspace_mb,
                             config.timing_cache_dir, log=log)
    except BonedeployError as e:
        result.engine = {"built": False, "from": onnx_path.name, "error": str(e)}
        return
    except Exception as e:  # noqa: BLE001 -- TensorRT raises plain RuntimeError/TypeError; the
        # ONNX files are complete, so report the cause on one line and fail the run (exit 1).
        first = (str(e).strip().splitlines() or [""])[0][:300]
        result.engine = {"built": False, "from": onnx_path.name,
                         "error": f"TensorRT failed building from {onnx_path.name}: {type(e).__name__}: {first}"}
        return
    result.engine = {"built": True, "path": engine.name, "from": onnx_path.name,
                     "sidecar": built.sidecar.name, "seconds": round(built.seconds, 1),
                     "timing_cache": str(built.timing_cache) if built.timing_cache else None,
                     "tensorrt": built.sidecar_data.get("tensorrt"),
                     "gpu": built.sidecar_data.get("gpu_name")}
    try:
        cand = engine_logits(engine, x, config.batch.max)
    except BonedeployError as e:
        result.engine["error"] = f"{engine.name} was built but does not run here: {e}"
        return
    result.files.append(gate_file(engine, "engine", card.precision, ref, cand, paths, card.classes,
                                  labels, config.gates, decision=rule_for(card)))


def engine_logits(engine: Path, x: np.ndarray, max_batch: int) -> np.ndarray:
    """Run the engine through the ``tensorrt`` backend (sidecar check included)."""
    from bonedeploy.backends.base import open_backend

    with open_backend(engine, backend="tensorrt") as b:
        step = max(1, min(16, max_batch))
        return np.concatenate([b.infer(x[i:i + step]) for i in range(0, len(x), step)])


def export_engine_only(config, log) -> Any:
    """``bonedeploy export model.fp16.onnx``: check, build, gate against onnxruntime CPU."""
    from bonedeploy.eval import parity
    from bonedeploy.export import onnx as ox
    from bonedeploy.export.from_checkpoint import ENGINE_REPORT_NAME, ExportResult, engine_command, onnx_logits
    from bonedeploy.export.tensorrt import tensorrt_available

    src = config.source
    proto = ox.load_onnx(src)  # checker + IO contract: a broken file fails here, one line
    card = ox.read_card(proto, str(src))
    if config.trt is False:
        raise BackendUnavailableError(f"{src}: --no-trt with an ONNX input leaves nothing to do "
                                      "(an .onnx input only builds the TensorRT engine)")
    ok, why = tensorrt_available()
    if not ok:
        raise BackendUnavailableError(
            f"{src}: no engine built: {why}. Run `{engine_command(src, config)}` on the target "
            "device (TensorRT + NVIDIA GPU); the ONNX file itself runs anywhere with onnxruntime")
    out_dir = config.out_dir
    out_dir.mkdir(parents=True, exist_ok=True)
    log("preparing parity inputs (the ONNX file on onnxruntime CPU is the reference) ...")
    x, labels, paths = parity.parity_inputs(data=config.data, spec=card.preprocess, n=config.parity_n,
                                            classes=card.classes)
    ref = onnx_logits(src, x)
    result = ExportResult(src, out_dir, card.model, sha256_file(src),
                          parity_inputs={"kind": parity.inputs_kind(None, config.data), "n": int(len(x)),
                                         "labelled": labels is not None,
                                         "reference": f"{src.name} on onnxruntime CPU"})
    build_and_gate(config, result, src, card, (x, labels, paths, ref), log)
    result.report = out_dir / ENGINE_REPORT_NAME  # export.json of the ONNX export stays intact
    write_json(result.report, result.to_dict(config.gates))
    return result
