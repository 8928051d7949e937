"""``listen --overlay``: a Secondary Capture of the Grad-CAM overlay beside each report.

Maps come from ``model.explain.onnx`` beside the engine (``explain.run.explainer_for_infer``, as
``infer --explain``), for the class the engine decided. The image is the overlay ``bonedeploy
explain`` draws, with "AI RESULT" burnt into its label bar, in a series of its own described as
an AI result (Burned In Annotation YES), in the source's study. An instance analysed before a
restart gets its report but no overlay (its map was not kept).
"""

from __future__ import annotations

import logging

import numpy as np

from bonedeploy.artefacts.dicom_sr import MANUFACTURER, Finding, report_uids
from bonedeploy.dicomnode.spool import Spool

log = logging.getLogger("bonedeploy.listen")
SERIES_NUMBER = 9902
MIN_SIDE = 384
SERIES_DESCRIPTION = "AI RESULT: Grad-CAM overlay (bonedeploy)"  # LO: at most 64 characters


class OverlayWriter:
    def __init__(self, engine, backend, spool: Spool, algorithm):
        from bonedeploy.explain.run import explainer_for_infer

        self.explainer = explainer_for_infer(engine).load()
        self.spool, self.algorithm = spool, algorithm
        self.classes = list(backend.card.classes)
        self.pending: dict[str, tuple[np.ndarray, np.ndarray]] = {}  # uid -> (image, cam)

    def prepare(self, uids: list[str], decoded, findings: dict[str, Finding], positive: str) -> None:
        """Maps for the decoded images of a batch, each for the class its finding decided."""
        negative = next(c for c in self.classes if c != positive)
        ok = [(k, i) for k, i in enumerate(decoded.ok) if findings[uids[i]].present is not None]
        if not ok:
            return
        decided = np.array([self.classes.index(positive if findings[uids[i]].present else negative)
                            for _, i in ok])
        _, _, cams = self.explainer.logits_and_cams(decoded.x[[k for k, _ in ok]], lambda _logits: decided)
        for (k, i), cam in zip(ok, cams):
            self.pending[uids[i]] = (decoded.x[k], cam)

    def write(self, uid: str, header, finding: Finding) -> list[str]:
        """The overlay's path, or none: an overlay that fails is logged, and the report still goes."""
        item = self.pending.pop(uid, None)
        if item is None or finding.present is None:
            return []
        try:
            return [str(self._write(uid, header, finding, *item))]
        except Exception as e:
            log.warning("%s: no overlay (%s: %s)", uid, type(e).__name__, e)
            return []

    def _write(self, uid: str, header, finding: Finding, image: np.ndarray, cam: np.ndarray):
        from bonedeploy.explain.overlay import overlay
        from bonedeploy.util.fs import atomic_path

        label = f"AI RESULT  fracture {'present' if finding.present else 'absent'}"
        if finding.probability is not None:
            label += f"  p={finding.probability:.3f}"
        k = max(1, -(-MIN_SIDE // max(cam.shape)))  # small model inputs: enlarged so the label reads
        image, cam = (np.repeat(np.repeat(a, k, -1), k, -2) for a in (image, cam))
        pixels = np.asarray(overlay(image, cam, label).convert("RGB"))
        sc = self.secondary_capture(header, pixels)
        out = self.spool.report_path(uid, "sc")
        with atomic_path(out) as tmp:
            sc.save_as(tmp, enforce_file_format=True)
        return out

    def secondary_capture(self, header, pixels: np.ndarray):
        import highdicom as hd

        series, _ = report_uids(header.SOPInstanceUID, header.StudyInstanceUID + ".sc", self.algorithm.artefact_sha256)
        _, sop = report_uids(header.SOPInstanceUID + ".sc", header.StudyInstanceUID, self.algorithm.artefact_sha256)
        orientation = tuple(header.get("PatientOrientation") or ())
        if len(orientation) != 2:  # never guessed: a wrong L/R on an image is worse than none
            raise ValueError("the source has no Patient Orientation to give the overlay")
        sc = hd.sc.SCImage.from_ref_dataset(
            header, pixels, "RGB", 8, "PATIENT", series, SERIES_NUMBER, sop, 1, MANUFACTURER,
            patient_orientation=orientation, series_description=SERIES_DESCRIPTION,
            laterality=_laterality(header))
        sc.BurnedInAnnotation = "YES"
        sc.ImageComments = "AI result (bonedeploy Grad-CAM), decided by " + self.algorithm.model
        return sc

    def close(self) -> None:
        self.explainer.close()


def _laterality(header) -> str | None:
    """The series laterality (2C for paired body parts such as the elbow), from the source."""
    side = str(header.get("Laterality") or header.get("ImageLaterality") or "")
    return side if side in ("R", "L") else None
