"""The types both halves of ``bonedeploy export`` share: what to do (``ExportConfig``), what the
gate compares against (``Reference``), what came out (``ExportedFile``, ``ExportResult``).

``from_checkpoint`` (ONNX files) and ``from_onnx`` (the engine) both import this module and
``export.gate``; neither imports the other's internals, so there is no import cycle.
"""

from __future__ import annotations

import shlex
import traceback
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

import numpy as np

from bonedeploy import __version__
from bonedeploy.artefacts.naming import DEFAULT_PRECISIONS, PRECISIONS
from bonedeploy.errors import ConfigError
from bonedeploy.eval.parity import GATES, Gate, ParitySet
from bonedeploy.export.onnx import DEFAULT_OPSET, validate_opset
from bonedeploy.export.repair import RepairConfig
from bonedeploy.export.tensorrt import DEFAULT_WORKSPACE_MB, BatchProfile
from bonedeploy.util.defaults import none_means_default

REPORT_NAME = "export.json"
ENGINE_REPORT_NAME = "export-engine.json"
REPORT_FORMAT = "bonedeploy.export/1"
Log = Callable[[str], None]


@none_means_default  # None (the CLI's 'not given') means the default below
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
    openvino: bool = False  # also OpenVINO IR beside each ONNX file (export.openvino_ir)
    repair: RepairConfig = field(default_factory=RepairConfig)  # mixed precision when a gate fails

    def __post_init__(self) -> None:
        self.source = Path(self.source)
        bad = [p for p in self.precisions if p not in PRECISIONS]
        if bad or not self.precisions:
            raise ConfigError(f"--precision {','.join(self.precisions) or '(empty)'}: "
                              f"valid precisions: {', '.join(PRECISIONS)}")
        self.precisions = tuple(p for p in PRECISIONS if p in self.precisions)
        if not isinstance(self.repair, RepairConfig):  # "off", "int8,fp16" (a profile, the CLI)
            self.repair = RepairConfig.parse(self.repair)
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


@dataclass(frozen=True, eq=False)
class Reference:
    """The parity set and the reference logits on it: what every exported file is gated against;
    with the card's OOD gate, the reference OOD scores on the set and its probes."""

    inputs: ParitySet
    logits: np.ndarray
    runs_on: str  # what produced the logits, for the report
    ood: np.ndarray | None = None
    ood_gate: Any = None  # artefacts.ood.OODGate

    def describe(self) -> dict[str, Any]:
        return {**self.inputs.describe(), "reference": self.runs_on}


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
    repair: dict[str, Any] | None = None  # the search after a failed gate (export.repair)

    @property
    def passed(self) -> bool:
        return not self.failures

    def to_dict(self) -> dict[str, Any]:
        d = {"path": self.path.name, "kind": self.kind, "precision": self.precision,
             "bytes": self.bytes, "sha256": self.sha256, "gate": self.gate,
             "passed": self.passed if self.parity is not None else None,
             "failures": list(self.failures), "parity": self.parity}
        if self.repair is not None:
            d["repair"] = self.repair
        return d


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
    notes: list[str] = field(default_factory=list)

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
                "engine": self.engine, "notes": list(self.notes)}


def error_detail(e: BaseException) -> dict[str, Any]:
    """The whole error for the report: the terminal gets one line, export.json everything
    (TensorRT's messages run over many lines and the first is rarely the cause)."""
    return {"type": type(e).__name__, "message": str(e),
            "traceback": traceback.format_exception(type(e), e, e.__traceback__)}


def engine_command(onnx_path: Path, config: ExportConfig) -> str:
    """The exact command that builds the engine on a machine with TensorRT and a GPU."""
    cmd = f"bonedeploy export {_shell_path(onnx_path)}"
    if config.batch != BatchProfile():
        cmd += f" --batch {config.batch.min},{config.batch.opt},{config.batch.max}"
    if config.workspace_mb != DEFAULT_WORKSPACE_MB:
        cmd += f" --workspace {config.workspace_mb}"
    return cmd


def _shell_path(p: Path) -> str:
    try:
        p = p.resolve().relative_to(Path.cwd().resolve())
    except ValueError:
        pass
    return shlex.quote(str(p))


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")
