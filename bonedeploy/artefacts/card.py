"""The model card every artefact carries: what the model is and how to feed it.

Stored as ONNX ``metadata_props`` (string -> string), inside checkpoints (as a dict) and in the
TensorRT sidecar, so no backend or command needs preprocessing flags of its own.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from typing import Any

from bonedeploy import CLASSES, __version__
from bonedeploy.errors import ArtefactError
from bonedeploy.data.preprocess import PreprocessSpec
from bonedeploy.artefacts.operating_point import OperatingPoint
from bonedeploy.artefacts.ood import OODGate

PREFIX = "bonedeploy."
PRECISIONS = ("fp32", "fp16", "int8")
_STRING_FIELDS = ("model", "precision", "source_sha256", "bonedeploy_version")


@dataclass(frozen=True)
class ModelCard:
    model: str
    classes: tuple[str, ...] = CLASSES
    preprocess: PreprocessSpec = field(default_factory=PreprocessSpec)
    precision: str = "fp32"
    source_sha256: str | None = None
    bonedeploy_version: str = __version__
    extra: dict[str, Any] = field(default_factory=dict)
    # How to read the logits (bonedeploy.eval.decision): logits / temperature -> softmax -> decide
    # at the operating point (None: argmax). ``calibration`` holds the fit's figures; ``history``
    # the values a later ``bonedeploy calibrate`` replaced, oldest first.
    operating_point: OperatingPoint | None = None
    temperature: float = 1.0
    calibration: dict[str, Any] | None = None
    history: tuple[dict[str, Any], ...] = ()
    # "temperature" / "operating point" when fitted with --force on fewer images than
    # bonedeploy.eval.set_size asks for: every artefact says its decision rests on a small set.
    fitted_below_minimum: tuple[str, ...] = ()
    # When to refuse an image as out of distribution (``ood_score`` > threshold); None: no gate (an
    # artefact made before bonedeploy fitted one). Replaced by ``calibrate`` with the rest.
    ood: OODGate | None = None

    def __post_init__(self) -> None:
        if self.precision not in PRECISIONS:
            raise ArtefactError(f"unknown precision {self.precision!r}; valid: {', '.join(PRECISIONS)}")
        if not float(self.temperature) > 0:
            raise ArtefactError(f"temperature {self.temperature!r} must be > 0")
        object.__setattr__(self, "classes", tuple(self.classes))
        object.__setattr__(self, "temperature", float(self.temperature))
        object.__setattr__(self, "history", tuple(dict(h) for h in self.history))
        object.__setattr__(self, "fitted_below_minimum", tuple(self.fitted_below_minimum))

    def with_(self, **changes: Any) -> "ModelCard":
        return replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "classes": list(self.classes),
            "preprocess": self.preprocess.to_dict(),
            "precision": self.precision,
            "source_sha256": self.source_sha256,
            "bonedeploy_version": self.bonedeploy_version,
            "extra": dict(self.extra),
            "operating_point": self.operating_point.to_dict() if self.operating_point else None,
            "temperature": self.temperature,
            "calibration": dict(self.calibration) if self.calibration else None,
            "history": [dict(h) for h in self.history],
            "fitted_below_minimum": list(self.fitted_below_minimum),
            "ood": self.ood.to_dict() if self.ood else None,
        }

    def decision_state(self) -> dict[str, Any]:
        """The decision fields, as kept in ``history`` when they are replaced."""
        d = self.to_dict()
        return {k: d[k] for k in ("operating_point", "temperature", "calibration", "fitted_below_minimum", "ood")}

    @classmethod
    def from_dict(cls, d: dict[str, Any], where: str = "artefact") -> "ModelCard":
        try:
            return cls(
                model=d["model"],
                classes=tuple(d["classes"]),
                preprocess=PreprocessSpec.from_dict(d["preprocess"]),
                precision=d.get("precision", "fp32"),
                source_sha256=d.get("source_sha256"),
                bonedeploy_version=d.get("bonedeploy_version", "unknown"),
                extra=dict(d.get("extra") or {}),
                operating_point=OperatingPoint.from_dict(op) if (op := d.get("operating_point")) else None,
                temperature=float(d.get("temperature", 1.0)),
                calibration=d.get("calibration"),
                history=tuple(d.get("history") or ()),
                fitted_below_minimum=tuple(d.get("fitted_below_minimum") or ()),  # absent before issue 23
                ood=OODGate.from_dict(g) if (g := d.get("ood")) else None,  # absent before issue 18
            )
        except (KeyError, TypeError, ValueError) as e:
            raise ArtefactError(f"{where}: model card is incomplete or malformed ({e})") from e

    def to_props(self) -> dict[str, str]:
        """Flat string map for ONNX metadata_props: one key per field, JSON where structured."""
        d = self.to_dict()
        return {
            PREFIX + k: v if isinstance(v, str) else json.dumps(v, sort_keys=True)
            for k, v in d.items()
            if v is not None
        }

    @classmethod
    def from_props(cls, props: dict[str, str], where: str = "artefact") -> "ModelCard":
        if PREFIX + "model" not in props:
            raise ArtefactError(f"{where}: no bonedeploy metadata (was it exported by bonedeploy?)")
        d: dict[str, Any] = {}
        for k, v in props.items():
            if not k.startswith(PREFIX):
                continue
            key = k[len(PREFIX):]
            d[key] = v if key in _STRING_FIELDS else json.loads(v)
        return cls.from_dict(d, where)
