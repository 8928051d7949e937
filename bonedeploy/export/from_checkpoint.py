"""``bonedeploy export``: the one library function the CLI calls (``run_export``).

From a checkpoint: fp32 ONNX -> fp16 / int8 variants -> parity gate of every file against the
PyTorch fp32 reference (onnxruntime on the CPU) -> a TensorRT engine when TensorRT and a GPU are
here. From an ``.onnx`` file: only the engine (how a Jetson builds from the file copied to it).

Files are produced in a staging folder inside the output folder and renamed into place at the
end, so a failure (bad checkpoint, no calibration images, a checker error) leaves no partial or
half-set of files behind. A file that fails its parity gate is kept and reported; the caller
decides the exit status (``ExportResult.failed``).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

import numpy as np

from bonedeploy import __version__
from bonedeploy.errors import ConfigError
from bonedeploy.artefacts.naming import DEFAULT_PRECISIONS, PRECISIONS, onnx_filename
from bonedeploy.export.onnx import DEFAULT_OPSET, validate_opset
from bonedeploy.export.tensorrt import DEFAULT_WORKSPACE_MB, BatchProfile
from bonedeploy.util.fs import sha256_file, write_json
from bonedeploy.eval.decision import rule_for
from bonedeploy.eval.parity import GATES, Gate

REPORT_NAME = "export.json"
ENGINE_REPORT_NAME = "export-engine.json"
REPORT_FORMAT = "bonedeploy.export/1"
Log = Callable[[str], None]


@dataclass
class ExportConfig:
    source: Path
    out: Path | None = None  # default: the source's folder
    precisions: tuple[str, ...] = DEFAULT_PRECISIONS
    trt: bool | None = None  # None: build when TensorRT and a GPU are here; True: required
    engine_from: str | None = None  # default: fp16 when exported, else the lowest precision
    batch: BatchProfile = field(default_factory=BatchProfile)
    workspace_mb: int = DEFAULT_WORKSPACE_MB
    calib: Path | None = None
    opset: int = DEFAULT_OPSET
    data: Path | None = None  # parity images (an image-folder tree)
    parity_n: int | None = None
    gates: dict[str, Gate] = field(default_factory=lambda: dict(GATES))
    timing_cache_dir: Path | None = None

    def __post_init__(self) -> None:
        self.source = Path(self.source)
        bad = [p for p in self.precisions if p not in PRECISIONS]
        if bad or not self.precisions:
            raise ConfigError(f"--precision {','.join(self.precisions) or '(empty)'}: "
                              f"valid precisions: {', '.join(PRECISIONS)}")
        self.precisions = tuple(p for p in PRECISIONS if p in self.precisions)
        if self.engine_from is not None and self.engine_from not in self.precisions:
            raise ConfigError(f"--engine-from {self.engine_from}: not among the exported precisions "
                              f"({', '.join(self.precisions)})")
        validate_opset(self.opset)

    @property
    def out_dir(self) -> Path:
        return Path(self.out) if self.out is not None else self.source.resolve().parent

    @property
    def engine_precision(self) -> str:
        if self.engine_from:
            return self.engine_from
        return "fp16" if "fp16" in self.precisions else self.precisions[-1]


@dataclass
class ExportedFile:
    path: Path
    kind: str  # "onnx" | "engine"
    precision: str
    bytes: int
    sha256: str
    parity: dict[str, Any] | None = None
    gate: str | None = None
    failures: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return not self.failures

    def to_dict(self) -> dict[str, Any]:
        return {"path": self.path.name, "kind": self.kind, "precision": self.precision,
                "bytes": self.bytes, "sha256": self.sha256, "gate": self.gate,
                "passed": self.passed if self.parity is not None else None,
                "failures": list(self.failures), "parity": self.parity}


@dataclass
class ExportResult:
    source: Path
    out_dir: Path
    model: str
    source_sha256: str
    files: list[ExportedFile] = field(default_factory=list)
    parity_inputs: dict[str, Any] = field(default_factory=dict)
    engine: dict[str, Any] = field(default_factory=dict)  # built / skipped (why + command) / error
    report: Path | None = None

    @property
    def failed(self) -> list[ExportedFile]:
        return [f for f in self.files if not f.passed]

    def to_dict(self, gates: dict[str, Gate]) -> dict[str, Any]:
        from bonedeploy.util.machine import library_versions

        return {"format": REPORT_FORMAT, "created": _now(), "bonedeploy_version": __version__,
                "source": str(self.source), "source_sha256": self.source_sha256, "model": self.model,
                "out_dir": str(self.out_dir), "versions": library_versions(),
                "gates": {k: g.describe() for k, g in gates.items()},
                "parity_inputs": self.parity_inputs, "files": [f.to_dict() for f in self.files],
                "engine": self.engine}


def run_export(config: ExportConfig, log: Log | None = None) -> ExportResult:
    """Export ``config.source`` (a checkpoint or an ONNX file); see the module docstring."""
    log = log or (lambda _msg: None)
    if config.source.suffix.lower() == ".onnx":
        from bonedeploy.export.from_onnx import export_engine_only

        return export_engine_only(config, log)
    return _export_checkpoint(config, log)


def _export_checkpoint(config: ExportConfig, log: Log) -> ExportResult:
    from bonedeploy.eval import parity
    from bonedeploy.artefacts.checkpoint import card_from_checkpoint, load_checkpoint, model_from_checkpoint
    from bonedeploy.export import precision as prec

    src, where = config.source, str(config.source)
    ckpt = load_checkpoint(src)
    model = model_from_checkpoint(ckpt, where)
    ckpt.pop("state_dict", None)  # the model holds the weights now (AlexNet: 590 MB less)
    sha = sha256_file(src)
    card = card_from_checkpoint(ckpt, where)
    card = card.with_(source_sha256=sha, bonedeploy_version=__version__,
                      extra={**card.extra, "checkpoint": src.name, "epoch": ckpt.get("epoch")})
    # Everything that can fail on the user's input is resolved before the first file is written.
    calib = (prec.calibration_set(ckpt, config.calib, card.preprocess, where)
             if "int8" in config.precisions else None)
    log("preparing parity inputs ...")
    x, labels, paths = parity.parity_inputs(ckpt=ckpt, data=config.data, spec=card.preprocess,
                                            n=config.parity_n, classes=card.classes)
    ref = torch_logits(model, x)
    out_dir = config.out_dir
    result = ExportResult(src, out_dir, card.model, sha,
                          parity_inputs={"kind": parity.inputs_kind(ckpt, config.data), "n": int(len(x)),
                                         "labelled": labels is not None})
    out_dir.mkdir(parents=True, exist_ok=True)
    stage = Path(tempfile.mkdtemp(prefix=".bonedeploy-export-", dir=out_dir))
    try:
        staged, cards = _write_variants(config, model, card, calib, stage, log)
        del model
        for p in config.precisions:
            log(f"parity of {onnx_filename(p)} against PyTorch fp32 ({len(x)} images) ...")
            result.files.append(gate_file(staged[p], "onnx", p, ref, onnx_logits(staged[p], x), paths,
                                          card.classes, labels, config.gates, decision=rule_for(card)))
        for f in result.files:  # all or nothing: rename into place only once every file exists
            final = out_dir / onnx_filename(f.precision)
            os.replace(f.path, final)
            f.path = final
    finally:
        shutil.rmtree(stage, ignore_errors=True)
    from bonedeploy.export.from_onnx import maybe_build_engine

    maybe_build_engine(config, result, out_dir / onnx_filename(config.engine_precision),
                       cards[config.engine_precision], (x, labels, paths, ref), log)
    result.report = out_dir / REPORT_NAME
    write_json(result.report, result.to_dict(config.gates))
    return result


def _write_variants(config: ExportConfig, model: Any, card, calib, stage: Path, log: Log):
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
        int8 = prec.to_int8(staged["fp32"], cards["fp32"], calib)
        cards["int8"] = ox.read_card(int8)
        staged["int8"] = _stage(ox, int8, stage, "int8", config.source)
    return staged, cards


def _stage(ox, proto, stage: Path, precision: str, src: Path) -> Path:
    ox.check_onnx(proto, f"{onnx_filename(precision)} (from {src.name})")
    return ox.save_onnx(proto, stage / onnx_filename(precision))


def gate_file(path: Path, kind: str, precision: str, ref: np.ndarray, cand: np.ndarray, paths,
              classes, labels, gates: dict[str, Gate], decision=None) -> ExportedFile:
    """Compare ``cand`` with the reference and record the file with its gate verdict
    (``decision``: the card's DecisionRule, for the figures at the operating point)."""
    from bonedeploy.eval import parity

    res = parity.compare(ref, cand, paths, classes, labels=labels, decision=decision)
    return ExportedFile(path, kind, precision, path.stat().st_size, sha256_file(path), res.to_dict(),
                        gates[precision].describe(), parity.check_gate(res, precision, gates))


def torch_logits(model: Any, x: np.ndarray, batch: int = 16) -> np.ndarray:
    import torch

    model.eval()
    with torch.inference_mode():
        return np.concatenate([model(torch.from_numpy(np.ascontiguousarray(x[i:i + batch]))).float().numpy()
                               for i in range(0, len(x), batch)])


def onnx_logits(path: Path, x: np.ndarray, batch: int = 16) -> np.ndarray:
    """onnxruntime on the CPU: the gate's runtime everywhere, so results compare across machines."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    name = sess.get_inputs()[0].name
    return np.concatenate([np.asarray(sess.run(None, {name: x[i:i + batch]})[0], dtype=np.float32)
                           for i in range(0, len(x), batch)])


def engine_command(onnx_path: Path, config: ExportConfig) -> str:
    """The exact command that builds the engine on a machine with TensorRT and a GPU."""
    cmd = f"bonedeploy export {_shell_path(onnx_path)}"
    if config.batch != BatchProfile():
        cmd += f" --batch {config.batch.min},{config.batch.opt},{config.batch.max}"
    if config.workspace_mb != DEFAULT_WORKSPACE_MB:
        cmd += f" --workspace {config.workspace_mb}"
    return cmd


def _shell_path(p: Path) -> str:
    import shlex

    try:
        p = p.resolve().relative_to(Path.cwd().resolve())
    except ValueError:
        pass
    return shlex.quote(str(p))


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")
