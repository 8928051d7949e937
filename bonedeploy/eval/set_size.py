"""How many images a temperature and an operating point need, and the verdict on a given set.

Both minima come from ``benchmarks/calibration_min_set.py`` (results in
``benchmarks/results/calibration_min_set-cpu-epyc-2core.md``). Below them the fitted value is
mostly noise that every artefact would then carry: issue 23 found ``train`` dividing every logit
by T = 4.40 fitted on 10 images. ``--force`` fits anyway, and the card records it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable, Sequence

import numpy as np

from bonedeploy.errors import DataError

# Images of EACH class a temperature is fitted on. Both classes are needed: T is pinned by the
# images the model gets wrong or nearly wrong, on either side. From 75 of each class on, the median
# 95% bootstrap interval of T spans at most x2 for a model of the seed's accuracy (83%), whether
# over-confident or not; at 5 of each class (a 10-image split) it is unbounded in most draws (a
# resample separates perfectly and T runs to its bound). More accurate models need more: ~200 of
# each class at 96%, ~400 at 98% (their few errors are all that pins T down).
MIN_TEMPERATURE_PER_CLASS = 75
# Positives a threshold for a target sensitivity is chosen on. The threshold is the k-th largest
# positive score (k = ceil(t n)), so the sensitivity it delivers on new images is Beta(k, n - k + 1)
# whatever the scores: from 30 positives on, a threshold chosen for 0.95 delivers under 0.85 with
# probability <= 5% (18% at 20 positives, 44% at 5), and steps of 1/n are finer than the 5 points
# between 95% and 100%.
MIN_OPERATING_POINT_POSITIVES = 30
TEMPERATURE, OPERATING_POINT = "temperature", "operating point"
EVIDENCE = "benchmarks/calibration_min_set.py"


@dataclass(frozen=True)
class SizeVerdict:
    """Whether a set is large enough for one fitted value (``fits``), and why not."""

    fits: str  # TEMPERATURE or OPERATING_POINT
    counts: dict[str, int]  # the images that count, per class
    minimum: int  # of each class in ``counts``
    where: str  # the split or folder, for the messages

    @property
    def ok(self) -> bool:
        return all(n >= self.minimum for n in self.counts.values())

    def shortfall(self) -> str:
        """'5 Fractured and 5 Normal images' / '12 Fractured images'."""
        parts = [f"{n} {name}" for name, n in self.counts.items()]
        return (", ".join(parts[:-1]) + " and " + parts[-1] if len(parts) > 1 else parts[0]) + " images"

    def reason(self) -> str:
        if self.fits == TEMPERATURE:
            need = (f"a temperature needs at least {self.minimum} images of each class: below that its "
                    "95% interval typically spans more than a factor of 2")
        else:
            need = (f"an operating point needs at least {self.minimum} {next(iter(self.counts))} images "
                    "(the positive class): below that a threshold chosen for sensitivity 0.95 delivers "
                    "under 0.85 on new images with a probability over 5%")
        return f"{self.where} has {self.shortfall()}; {need} ({EVIDENCE})"

    def to_dict(self) -> dict[str, Any]:
        return {"fits": self.fits, "counts": dict(self.counts), "minimum": self.minimum,
                "where": self.where, "ok": self.ok, "reason": None if self.ok else self.reason()}


def class_counts(labels: Sequence[int], classes: Sequence[str]) -> dict[str, int]:
    counts = np.bincount(np.asarray(labels, dtype=int), minlength=len(classes))
    return {name: int(counts[i]) for i, name in enumerate(classes)}


def size_verdicts(labels: Sequence[int], classes: Sequence[str], positive_class: str,
                  target: float | None, where: str) -> tuple[SizeVerdict, ...]:
    """The temperature's verdict, and the operating point's when a target sensitivity is asked for."""
    counts = class_counts(labels, classes)
    out = [SizeVerdict(TEMPERATURE, counts, MIN_TEMPERATURE_PER_CLASS, where)]
    if target is not None:
        out.append(SizeVerdict(OPERATING_POINT, {positive_class: counts.get(positive_class, 0)},
                               MIN_OPERATING_POINT_POSITIVES, where))
    return tuple(out)


def refuse_small(verdicts: Iterable[SizeVerdict], force: bool, way_out: str) -> tuple[str, ...]:
    """Raise ``DataError`` naming every set below its minimum, unless ``force``; with ``force``,
    the names of the values fitted below their minimum (for the card)."""
    small = [v for v in verdicts if not v.ok]
    if small and not force:
        raise DataError("; ".join(v.reason() for v in small) + f". {way_out}, or pass --force to fit "
                        "anyway (the card records that it was fitted below the minimum)")
    return tuple(v.fits for v in small)
