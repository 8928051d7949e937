"""Prediction rows -> DICOM Structured Reports: ``infer --dicom-sr DIR`` and ``bonedeploy listen``.

One mapping from an inference row to the report's finding, so that a report says the same thing
whichever command wrote it: the decision is the card's rule (``DecisionRule``), the threshold and
target sensitivity are the operating point's, and a row in error becomes "not analysed: <cause>".
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from bonedeploy.artefacts.dicom_sr import Algorithm, Finding
from bonedeploy.artefacts.dicom_sr_encode import write_report

SR_SUFFIX = ".sr.dcm"


def algorithm_of(backend, artefact_sha256: str | None) -> Algorithm:
    from bonedeploy import __version__

    return Algorithm(model=backend.card.model, artefact_sha256=artefact_sha256 or "unknown",
                     version=__version__)


def finding_of(row: dict[str, Any], rule, card) -> Finding:
    """The report's finding for one row of ``predict_rows``: a row the OOD gate refused is "not
    analysed" with the gate's reason and score, as a decoding error is with its cause."""
    score = row.get("ood_score")
    score = float(score) if score is not None and np.isfinite(score) else None
    if row["status"] != "ok" or row.get("probs") is None:
        return Finding.refused(row["status"].removeprefix("error: "), ood_score=score)
    probs = np.array([row["probs"]], dtype=np.float64)
    decided = rule.classes[int(rule.decide(probs)[0])]
    op = getattr(card, "operating_point", None)
    target = op.target_sensitivity if op is not None and rule.source == "operating point" else None
    index = rule.positive_index
    return Finding(present=decided == rule.positive_class,
                   probability=None if index is None else float(probs[0, index]),
                   threshold=rule.threshold, target_sensitivity=target, ood_score=score)


def report_path(out_dir: Path, sop_instance_uid: str) -> Path:
    return Path(out_dir) / f"{sop_instance_uid}{SR_SUFFIX}"


def read_header(path: str | Path):
    """The dataset without its pixels, or None when the file is not DICOM."""
    import pydicom
    from pydicom.errors import InvalidDicomError

    try:
        ds = pydicom.dcmread(path, stop_before_pixels=True)
    except (InvalidDicomError, OSError, ValueError, EOFError):
        return None
    return ds if "SOPInstanceUID" in ds and "StudyInstanceUID" in ds else None


@dataclass
class ReportWriter:
    """Writes one report per DICOM input row; other inputs (PNG, JPEG) are counted, not reported."""

    out_dir: Path
    algorithm: Algorithm
    rule: Any
    card: Any
    written: int = 0
    not_dicom: list[str] = field(default_factory=list)

    def write(self, rows: list[dict[str, Any]]) -> None:
        for row in rows:
            source = read_header(row["path"])
            if source is None:
                self.not_dicom.append(row["path"])
                continue
            write_report(report_path(self.out_dir, source.SOPInstanceUID), source,
                         finding_of(row, self.rule, self.card), self.algorithm)
            self.written += 1
