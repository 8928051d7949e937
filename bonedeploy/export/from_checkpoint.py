"""``bonedeploy export``: the one library function the CLI calls (``run_export``).

From a checkpoint: fp32 ONNX -> fp16 / int8 variants -> parity gate of every file against the
PyTorch fp32 reference (``export.gate``: the torch and onnxruntime backends, CPU) -> a TensorRT
engine when TensorRT and a GPU are here (``export.from_onnx``). From an ``.onnx`` file: only the
engine (how a Jetson builds from the file copied to it).

Files are produced in a staging folder inside the output folder and renamed into place at the
end, so a failure (bad checkpoint, no calibration images, a checker error) leaves no partial or
half-set of files behind. A file that fails its parity gate is kept and reported; the caller
decides the exit status (``ExportResult.failed``).
"""

from __future__ import annotations

import functools
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

from bonedeploy import __version__
from bonedeploy.artefacts.naming import onnx_filename
from bonedeploy.eval.decision import rule_for
from bonedeploy.export import gate
from bonedeploy.export.from_onnx import export_engine_only, maybe_build_engine
from bonedeploy.export.results import REPORT_NAME, ExportConfig, ExportResult, Log
from bonedeploy.util.fs import sha256_file, write_json

__all__ = ["ExportConfig", "ExportResult", "run_export"]


def run_export(config: ExportConfig, log: Log | None = None) -> ExportResult:
    """Export ``config.source`` (a checkpoint or an ONNX file); see the module docstring."""
    log = log or (lambda _msg: None)
    if config.source.suffix.lower() == ".onnx":
        return export_engine_only(config, log)
    return _export_checkpoint(config, log)


def _export_checkpoint(config: ExportConfig, log: Log) -> ExportResult:
    from bonedeploy.artefacts.checkpoint import card_from_checkpoint, load_checkpoint, model_from_checkpoint
    from bonedeploy.eval.parity import select_parity_set
    from bonedeploy.export import precision as prec

    t0 = time.perf_counter()
    src, where = config.source, str(config.source)
    from bonedeploy.models.ood import scored_model

    ckpt = load_checkpoint(src)
    card = card_from_checkpoint(ckpt, where)
    # with the card's OOD gate: the head and its fitted tensors, traced into the graph
    model = scored_model(model_from_checkpoint(ckpt, where), card, ckpt)
    ckpt.pop("state_dict", None)  # the model holds the weights now (AlexNet: 590 MB less)
    sha = sha256_file(src)
    card = card.with_(source_sha256=sha, bonedeploy_version=__version__,
                      extra={**card.extra, "checkpoint": src.name, "epoch": ckpt.get("epoch")})
    # Everything that can fail on the user's input is resolved before the first file is written.
    calib = (prec.calibration_set(ckpt, config.calib, card.preprocess, where)
             if "int8" in config.precisions else None)
    refit, no_refit = _ood_refit_data(ckpt, card, where, config)
    log("preparing parity inputs ...")
    inputs = gate.for_card(select_parity_set(ckpt=ckpt, data=config.data, spec=card.preprocess,
                                             n=config.parity_n, classes=card.classes), card)
    ref = gate.torch_reference(model, card, src, inputs)
    out_dir = config.out_dir
    result = ExportResult(src, out_dir, card.model, sha, parity_inputs=ref.describe())
    out_dir.mkdir(parents=True, exist_ok=True)
    stage = Path(tempfile.mkdtemp(prefix=".bonedeploy-export-", dir=out_dir))
    try:
        builder = functools.partial(_int8_builder, refit=refit)
        staged, cards = _write_variants(config, model, card, calib, stage, log, builder)
        del model
        for p in config.precisions:
            log(f"parity of {onnx_filename(p)} against {ref.runs_on} ({len(inputs)} images) ...")
            cand = gate.onnx_cpu_outputs(staged[p], inputs)
            result.files.append(gate.gate_file(staged[p], "onnx", p, ref, cand, card.classes, config.gates,
                                               decision=rule_for(card)))
        _repair_failed(config, result, staged, cards, calib, ref, stage, log, time.perf_counter() - t0, builder)
        if no_refit:
            result.notes.append(no_refit)
        for f in result.files:  # all or nothing: rename into place only once every file exists
            final = out_dir / onnx_filename(f.precision)
            os.replace(f.path, final)
            f.path = final
    finally:
        shutil.rmtree(stage, ignore_errors=True)
    if config.openvino:
        from bonedeploy.export.openvino_ir import export_all

        export_all(config, result, ref, card.classes, log)
    maybe_build_engine(config, result, out_dir / onnx_filename(config.engine_precision),
                       cards[config.engine_precision], ref, log)
    result.report = out_dir / REPORT_NAME
    write_json(result.report, result.to_dict(config.gates))
    return result


def _ood_refit_data(ckpt: dict[str, Any], card, where: str, config: ExportConfig):
    """The images the int8 file's OOD gate is refitted on (``export.ood_refit``), or why none."""
    if "int8" not in config.precisions:
        return None, None
    from bonedeploy.export.ood_refit import refit_data

    data, why = refit_data(ckpt, card, where)
    note = (f"model.int8.onnx keeps the checkpoint's OOD gate (not refitted on its own features: {why}); "
            "its parity gate compares the decisions") if why else None
    return data, note


def _write_variants(config: ExportConfig, model: Any, card, calib, stage: Path, log: Log, int8_builder=None):
    """fp32 (always: the others derive from it), then fp16 / int8, each checked and saved in
    ``stage``. Returns their paths and model cards by precision."""
    from bonedeploy.export import onnx as ox
    from bonedeploy.export import precision as prec

    log(f"exporting {card.model} to ONNX fp32 (opset {config.opset}) ...")
    fp32 = ox.export_fp32(model, card, config.opset)
    cards = {"fp32": ox.read_card(fp32)}
    staged = {"fp32": _stage(ox, fp32, stage, "fp32", config.source)}
    if "fp16" in config.precisions:
        log("converting to fp16 ...")
        fp16 = prec.to_fp16(fp32, cards["fp32"])
        cards["fp16"] = ox.read_card(fp16)
        staged["fp16"] = _stage(ox, fp16, stage, "fp16", config.source)
        del fp16
    del fp32
    if "int8" in config.precisions:
        log(f"quantising to int8 (QDQ, {len(calib.files)} calibration images) ...")
        int8 = (int8_builder or _int8_builder)(staged, cards, calib, stage).build()
        cards["int8"] = ox.read_card(int8)
        staged["int8"] = _stage(ox, int8, stage, "int8", config.source)
    return staged, cards


def _int8_builder(staged: dict[str, Path], cards: dict[str, Any], calib, stage: Path, refit=None):
    """One builder per export: the repair reuses its pre-processed graph and calibrated ranges;
    ``refit``: every int8 graph it builds gets its OOD gate fitted on its own features."""
    from bonedeploy.export.precision import Int8Builder

    work = stage / "int8-work"
    work.mkdir(exist_ok=True)
    return Int8Builder(staged["fp32"], cards["fp32"], calib, work, refit)


def _repair_failed(config: ExportConfig, result: ExportResult, staged, cards, calib, ref, stage: Path,
                   log: Log, elapsed: float, int8_builder=None) -> None:
    """A file that failed its gate, in a precision ``config.repair`` covers, is replaced by the
    cheapest repair that passes (``export.mixed``); the search is recorded either way. The
    searches share ``time_ratio`` x the ``elapsed`` time of the export so far."""
    from bonedeploy.export.mixed import repairer_for

    ratio = config.repair.time_ratio
    deadline = None if ratio is None else time.perf_counter() + ratio * elapsed
    for i, f in enumerate(result.files):
        if f.passed or f.precision not in config.repair.precisions:
            continue
        repairer, first = repairer_for(f.precision, staged, cards, calib, ref, config.gates, stage, log,
                                       int8_builder or _int8_builder)
        left = None if deadline is None else max(0.0, deadline - time.perf_counter())
        outcome, kept = repairer.run(f, first, config.repair, left)
        kept.repair = outcome.to_dict()
        result.files[i] = kept


def _stage(ox, proto, stage: Path, precision: str, src: Path) -> Path:
    ox.check_onnx(proto, f"{onnx_filename(precision)} (from {src.name})")
    return ox.save_onnx(proto, stage / onnx_filename(precision))
