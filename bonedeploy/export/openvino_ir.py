"""``bonedeploy export --openvino``: OpenVINO IR (``.xml`` + ``.bin``) beside each ONNX file.

Converted with OpenVINO's own ``convert_model``/``save_model`` (weights kept in the ONNX file's
precision: no extra fp16 compression of an fp32 or int8 graph); the model card rides along as the
model's ``framework`` rt_info, which ``save_model`` writes into the IR. Each IR is gated like every
other file: run through the ``openvino`` backend on the export's parity set and compared with the
same reference and gate as its ONNX source. Never imports torch.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

from bonedeploy.errors import ArtefactError, BackendUnavailableError

Log = Callable[[str], None]
REPORT_NAME = "export-openvino.json"


def ir_path_for(onnx_path: Path, out_dir: Path | None = None) -> Path:
    """``model.int8.onnx`` -> ``model.int8.xml`` (its weights: ``model.int8.bin``)."""
    return (out_dir or onnx_path.parent) / (onnx_path.name.removesuffix(".onnx") + ".xml")


def convert(onnx_path: Path, xml: Path) -> Path:
    try:
        import openvino as ov
    except ImportError as e:
        raise BackendUnavailableError(f"--openvino needs OpenVINO (pip install 'bonedeploy[openvino]'): {e}") from e
    from bonedeploy.util.fs import atomic_path

    try:
        model = ov.convert_model(str(onnx_path))
    except Exception as e:  # noqa: BLE001 -- the converter's own error types
        first = (str(e).strip().splitlines() or [type(e).__name__])[0][:200]
        raise ArtefactError(f"{onnx_path}: OpenVINO cannot convert it ({first})") from e
    xml.parent.mkdir(parents=True, exist_ok=True)
    # .bin first, then .xml: a reader never finds an .xml whose weights are not complete.
    with atomic_path(xml) as tmp_xml, atomic_path(xml.with_suffix(".bin")) as tmp_bin:
        staged = tmp_xml.with_name(tmp_xml.name + ".xml")
        ov.save_model(model, str(staged), compress_to_fp16=False)
        staged.with_suffix(".bin").replace(tmp_bin)
        staged.replace(tmp_xml)
    return xml


def export_ir(onnx_path: Path, precision: str, reference, classes, gates, log: Log,
              out_dir: Path | None = None):
    """Convert one ONNX file and gate the IR; returns its ``ExportedFile``."""
    from bonedeploy.backends.openvino import OpenVinoBackend
    from bonedeploy.export import gate

    xml = ir_path_for(onnx_path, out_dir)
    log(f"converting {onnx_path.name} to OpenVINO IR {xml.name} ...")
    convert(onnx_path, xml)
    cand = gate.run_backend(OpenVinoBackend(xml, cache=False), reference.inputs)
    return gate.gate_file(xml, "openvino-ir", precision, reference, cand, classes, gates)


def export_all(config, result, reference, classes, log: Log) -> None:
    """An IR for every ONNX file of ``result`` (after they are in place)."""
    for f in [f for f in result.files if f.kind == "onnx"]:
        result.files.append(export_ir(f.path, f.precision, reference, classes, config.gates, log))


def export_ir_only(config, log: Log):
    """``bonedeploy export model.int8.onnx --openvino``: the IR, gated against the ONNX file on
    onnxruntime CPU (the reference when there is no checkpoint)."""
    from bonedeploy.backends.openvino import OpenVinoBackend
    from bonedeploy.eval.parity import select_parity_set
    from bonedeploy.export import gate
    from bonedeploy.export.results import ExportResult
    from bonedeploy.util.fs import sha256_file, write_json

    src = config.source
    with OpenVinoBackend(src, cache=False) as b:
        card = b.card
    log("preparing parity inputs (the ONNX file on onnxruntime CPU is the reference) ...")
    inputs = gate.for_card(select_parity_set(data=config.data, spec=card.preprocess, n=config.parity_n,
                                             classes=card.classes), card)
    reference = gate.onnx_reference(src, inputs, card)
    out_dir = config.out_dir
    result = ExportResult(src, out_dir, card.model, sha256_file(src), parity_inputs=reference.describe())
    result.files.append(export_ir(src, card.precision, reference, card.classes, config.gates, log, out_dir))
    result.engine = {"built": False, "reason": "--openvino with an ONNX input converts it to IR only"}
    result.report = out_dir / REPORT_NAME
    write_json(result.report, result.to_dict(config.gates))
    return result
