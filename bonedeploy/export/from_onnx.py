"""The engine half of ``bonedeploy export``: build a TensorRT engine from an exported ONNX file
when TensorRT and a GPU are here, or say why not and print the command for the target device.

``export_engine_only`` handles ``bonedeploy export model.fp16.onnx`` (on a Jetson or GPU server):
check the file, build the engine, and gate it against the same ONNX file run with onnxruntime on
the CPU over the parity set (no checkpoint there to compare with).

A failed step is summarised on one line for the terminal (``engine["error"]``) and recorded
whole in the report (``engine["error_detail"]``: type, full message, traceback).
"""

from __future__ import annotations

from pathlib import Path


from bonedeploy.artefacts.card import ModelCard
from bonedeploy.artefacts.naming import engine_path_for
from bonedeploy.errors import BackendUnavailableError, BonedeployError
from bonedeploy.eval.parity import ParitySet
from bonedeploy.export import gate
from bonedeploy.export.results import (
    ENGINE_REPORT_NAME,
    ExportConfig,
    ExportResult,
    Log,
    Reference,
    engine_command,
    error_detail,
)
from bonedeploy.util.fs import sha256_file, write_json

SUMMARY_CHARS = 300  # the terminal's one line; the report keeps the whole text


def maybe_build_engine(config: ExportConfig, result: ExportResult, onnx_path: Path, card: ModelCard,
                       reference: Reference, log: Log) -> None:
    """Fill ``result.engine`` (built, or skipped with the reason and the command to run) and,
    when built, gate the engine against ``reference``."""
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
    build_and_gate(config, result, onnx_path, card, reference, log)


def build_and_gate(config: ExportConfig, result: ExportResult, onnx_path: Path, card: ModelCard,
                   reference: Reference, log: Log) -> None:
    from bonedeploy.export.tensorrt import build_engine

    engine = engine_path_for(onnx_path, result.out_dir)
    try:
        built = build_engine(onnx_path, engine, card, config.batch, config.workspace_mb,
                             config.timing_cache_dir, log=log)
    except BonedeployError as e:
        result.engine = {"built": False, "from": onnx_path.name, "error": str(e),
                         "error_detail": error_detail(e)}
        return
    except Exception as e:  # noqa: BLE001 -- TensorRT raises plain RuntimeError/TypeError; the
        # ONNX files are complete, so report the cause on one line and fail the run (exit 1).
        first = (str(e).strip().splitlines() or [""])[0][:SUMMARY_CHARS]
        result.engine = {"built": False, "from": onnx_path.name,
                         "error": f"TensorRT failed building from {onnx_path.name}: {type(e).__name__}: {first}",
                         "error_detail": error_detail(e)}
        return
    result.engine = {"built": True, "path": engine.name, "from": onnx_path.name,
                     "sidecar": built.sidecar.name, "seconds": round(built.seconds, 1),
                     "timing_cache": str(built.timing_cache) if built.timing_cache else None,
                     "tensorrt": built.sidecar_data.get("tensorrt"),
                     "gpu": built.sidecar_data.get("gpu_name")}
    try:
        cand = engine_logits(engine, reference.inputs, config.batch.max)
    except BonedeployError as e:
        result.engine["error"] = f"{engine.name} was built but does not run here: {e}"
        result.engine["error_detail"] = error_detail(e)
        return
    from bonedeploy.eval.decision import rule_for

    result.files.append(gate.gate_file(engine, "engine", card.precision, reference, cand, card.classes,
                                       config.gates, decision=rule_for(card)))


def engine_logits(engine: Path, inputs: ParitySet, max_batch: int):
    """Run the engine through the ``tensorrt`` backend (sidecar check included): its logits and
    OOD scores (``parity.Outputs``)."""
    from bonedeploy.backends.base import open_backend

    return gate.run_backend(open_backend(engine, backend="tensorrt"), inputs, min(16, max_batch))


def export_engine_only(config: ExportConfig, log: Log) -> ExportResult:
    """``bonedeploy export model.fp16.onnx``: check, build, gate against onnxruntime CPU."""
    from bonedeploy.eval.parity import select_parity_set
    from bonedeploy.export import onnx as ox
    from bonedeploy.export.tensorrt import tensorrt_available

    src = config.source
    if config.openvino and not config.trt:
        from bonedeploy.export.openvino_ir import export_ir_only

        return export_ir_only(config, log)
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
    inputs = gate.for_card(select_parity_set(data=config.data, spec=card.preprocess, n=config.parity_n,
                                             classes=card.classes), card)
    reference = gate.onnx_reference(src, inputs, card)
    result = ExportResult(src, out_dir, card.model, sha256_file(src), parity_inputs=reference.describe())
    build_and_gate(config, result, src, card, reference, log)
    result.report = out_dir / ENGINE_REPORT_NAME  # export.json of the ONNX export stays intact
    write_json(result.report, result.to_dict(config.gates))
    return result
