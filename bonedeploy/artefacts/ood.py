"""The out-of-distribution gate as every artefact's card stores it, and the one rule that reads it.

The score itself is computed inside the model (``bonedeploy.models.ood``: the graph's second output
``ood_score``, the checkpoint's OOD tensors), so an edge box with the base install gets it from
onnxruntime alone. The card says how to read it: an image whose score is above ``threshold`` (or
not a number) is refused. Fitting the gate (``bonedeploy.eval.ood``) needs evaluation code the edge
runtime never loads; this on-disk format sits below the runtime.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from bonedeploy.errors import ArtefactError
from bonedeploy.models.ood_spec import BLANK_SCORE, METHODS, OOD_OUTPUT

__all__ = ["BLANK_SCORE", "METHODS", "NO_GATE_NOTE", "OOD_OUTPUT", "OODGate", "REJECTED", "rejection_statuses"]
REJECTED = "rejected: out of distribution"
NO_GATE_NOTE = ("this artefact has no out-of-distribution gate (made before bonedeploy fitted one, "
                "or by a model family without a feature layer): every image gets a label; refit with "
                "`bonedeploy calibrate CHECKPOINT` and re-export")


@dataclass(frozen=True)
class OODGate:
    """Refuse an image when its ``ood_score`` > ``threshold``.

    ``n_images`` in-distribution images (``threshold_on``) set the threshold: the k-th smallest of
    their scores, k = ceil((n + 1) (1 - target_fpr)), capped at n. On new in-distribution images the
    flagged share then averages ``expected_fpr`` = (n + 1 - k) / (n + 1) and stays below
    ``fpr_upper95`` with probability 0.95 (Beta(n + 1 - k, k), whatever the scores' distribution);
    with fewer than ``min_images`` the target cannot be met and the max is used (``below_minimum``).
    """

    method: str
    threshold: float
    target_fpr: float
    n_images: int
    expected_fpr: float
    fpr_upper95: float
    min_images: int
    feature_layer: str | None = None  # module whose pooled output is scored (None: the logits)
    feature_dim: int | None = None
    transform: str | None = None  # "signed-sqrt": applied to the pooled features before scoring
    fitted_on: str | None = None
    threshold_on: str | None = None
    fitted_at: str | None = None
    input_checks: dict[str, Any] = field(default_factory=dict)  # {"min_std": ...}: blank images
    criterion: str | None = None  # how the method was chosen among those compared
    comparison: tuple[dict[str, Any], ...] = ()  # every method's figures, the chosen one marked

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ArtefactError(f"unknown OOD method {self.method!r}; valid: {', '.join(METHODS)}")
        if not math.isfinite(float(self.threshold)):
            raise ArtefactError(f"OOD threshold {self.threshold!r} must be a finite number")
        object.__setattr__(self, "threshold", float(self.threshold))
        object.__setattr__(self, "comparison", tuple(dict(c) for c in self.comparison))
        object.__setattr__(self, "input_checks", dict(self.input_checks))

    @property
    def below_minimum(self) -> bool:
        return self.n_images < self.min_images

    def rejects(self, scores: Any) -> np.ndarray:
        """True where an image is refused: score above the threshold, or not a number."""
        s = np.asarray(scores, dtype=np.float64)
        return ~(s <= self.threshold)

    def status(self, score: float) -> str:
        """The row status of a refused image."""
        if score >= BLANK_SCORE / 2:  # (half: a score read back from 6 significant digits)
            return f"{REJECTED} (blank image: no contrast; score {score:.4g} > threshold {self.threshold:.4g})"
        return f"{REJECTED} (score {score:.4g} > threshold {self.threshold:.4g})"

    def describe(self) -> str:
        how = self.method + (f" ({self.transform} features)" if self.transform else "")
        s = (f"{how} score > {self.threshold:.4g} is refused; threshold set on {self.n_images} "
             f"in-distribution images for {self.target_fpr:.1%} flagged (expected {self.expected_fpr:.1%}, "
             f"below {self.fpr_upper95:.1%} with 95% probability)")
        if self.below_minimum:
            s += f" [fewer than the {self.min_images} images {self.target_fpr:.1%} needs]"
        return s

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["comparison"] = [dict(c) for c in self.comparison]
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "OODGate":
        valid = set(cls.__dataclass_fields__)
        try:
            return cls(**{k: v for k, v in d.items() if k in valid})
        except TypeError as e:
            raise ArtefactError(f"malformed OOD gate in the model card ({e})") from e


def rejection_statuses(gate: OODGate | None, scores: np.ndarray | None) -> list[str | None]:
    """Per image: the refusal status, or None when it may be answered (always None without a gate
    or without scores)."""
    if gate is None or scores is None:
        return [None] * (0 if scores is None else len(scores))
    refused = gate.rejects(scores)
    return [gate.status(float(s)) if r else None for s, r in zip(scores, refused)]
