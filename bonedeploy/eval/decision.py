"""The one post-processing every backend shares: logits -> calibrated probabilities -> decision.

Every artefact outputs raw logits; the model card says how to read them: divide by the fitted
temperature, softmax, and decide ``p(positive) >= threshold`` at the stored operating point (argmax
when the card has none). ``infer``, the parity gate, ``bench`` and ``explain`` all call
``DecisionRule`` so that a probability or a decision means the same thing on every backend.

Probabilities are rounded to ``PROB_DECIMALS`` before deciding: that is the precision the
predictions files carry, so every decision can be re-checked from the file (``predicted`` equals
``p >= threshold`` row by row), and operating points are chosen on the same rounded values.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from bonedeploy import POSITIVE_CLASS
from bonedeploy.errors import ConfigError

PROB_DECIMALS = 6
SOURCES = ("operating point", "--threshold", "argmax")


@dataclass(frozen=True)
class DecisionRule:
    classes: tuple[str, ...]
    temperature: float = 1.0
    threshold: float | None = None  # on calibrated p(positive_class); None = argmax
    source: str = "argmax"
    positive_class: str = POSITIVE_CLASS

    def __post_init__(self) -> None:
        object.__setattr__(self, "classes", tuple(self.classes))
        if not float(self.temperature) > 0:
            raise ConfigError(f"temperature {self.temperature}: must be > 0")
        if self.source not in SOURCES:
            raise ConfigError(f"decision source {self.source!r}; valid: {', '.join(SOURCES)}")
        if self.threshold is not None:
            if not 0.0 <= self.threshold <= 1.0:
                raise ConfigError(f"threshold {self.threshold}: must be in [0, 1]")
            if self.positive_class not in self.classes or len(self.classes) != 2:
                raise ConfigError(f"a threshold needs two classes including {self.positive_class!r}; "
                                  f"this model has {list(self.classes)}")

    @property
    def positive_index(self) -> int | None:
        return self.classes.index(self.positive_class) if self.positive_class in self.classes else None

    def probabilities(self, logits: np.ndarray) -> np.ndarray:
        """Calibrated probabilities N x classes (float64, rounded to ``PROB_DECIMALS``)."""
        from bonedeploy.eval.metrics import softmax

        z = np.asarray(logits, dtype=np.float64) / float(self.temperature)
        return np.round(softmax(z, np.float64), PROB_DECIMALS)

    def decide(self, probs: np.ndarray) -> np.ndarray:
        """Class index per row of calibrated probabilities."""
        from bonedeploy.eval.metrics import classify

        return classify(np.asarray(probs, dtype=np.float64), self.classes, self.threshold)

    def apply(self, logits: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        probs = self.probabilities(logits)
        return probs, self.decide(probs)

    def describe(self) -> dict[str, Any]:
        """What the run record states: the threshold used and where it came from."""
        return {"threshold": self.threshold, "threshold_source": self.source,
                "temperature": float(self.temperature), "positive_class": self.positive_class,
                "rule": (f"p({self.positive_class}) >= {self.threshold:g}" if self.threshold is not None
                         else "argmax of the calibrated probabilities")}


def rule_for(card: Any, threshold: float | None = None) -> DecisionRule:
    """The card's rule: its temperature and operating point; ``threshold`` (``--threshold``) overrides."""
    op = getattr(card, "operating_point", None)
    positive = op.positive_class if op is not None else POSITIVE_CLASS
    temperature = float(getattr(card, "temperature", 1.0) or 1.0)
    if threshold is not None:
        return DecisionRule(card.classes, temperature, float(threshold), "--threshold", positive)
    if op is not None and op.threshold is not None:
        return DecisionRule(card.classes, temperature, float(op.threshold), "operating point", positive)
    return DecisionRule(card.classes, temperature, None, "argmax", positive)


def positive_scores(rule: DecisionRule, logits: np.ndarray) -> np.ndarray:
    """Calibrated p(positive) per row (what thresholds are chosen on)."""
    if rule.positive_index is None:
        raise ConfigError(f"no {rule.positive_class!r} class in {list(rule.classes)}")
    return rule.probabilities(logits)[:, rule.positive_index]


def is_positive(labels: Sequence[int], rule: DecisionRule) -> np.ndarray:
    return np.asarray(labels, dtype=int) == rule.positive_index
