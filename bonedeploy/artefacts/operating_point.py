"""The operating point as every artefact's card stores it: the threshold and how it was chosen.

An on-disk format, so it sits below the runtime; fitting it (``bonedeploy.eval.operating_point``)
needs evaluation code the edge runtime never loads.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any


@dataclass(frozen=True)
class OperatingPoint:
    """How the model decides: ``p(positive_class) >= threshold`` (``threshold`` None: argmax)."""

    positive_class: str
    threshold: float | None = None
    target_sensitivity: float | None = None
    sensitivity: float | None = None
    sensitivity_ci95: tuple[float, float] | None = None
    specificity: float | None = None
    specificity_ci95: tuple[float, float] | None = None
    n: int = 0
    n_positive: int = 0
    chosen_on: str | None = None  # where the images came from (split / folder)
    chosen_at: str | None = None  # ISO time
    # chosen with --force on fewer positives than bonedeploy.eval.set_size asks for
    fitted_below_minimum: bool = False

    def __post_init__(self) -> None:
        for name in ("sensitivity_ci95", "specificity_ci95"):
            v = getattr(self, name)
            if v is not None:
                object.__setattr__(self, name, (float(v[0]), float(v[1])))

    @property
    def is_argmax(self) -> bool:
        return self.threshold is None

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        for name in ("sensitivity_ci95", "specificity_ci95"):
            if d[name] is not None:
                d[name] = list(d[name])
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "OperatingPoint":
        valid = set(cls.__dataclass_fields__)
        return cls(**{k: v for k, v in d.items() if k in valid})

    def describe(self) -> str:
        if self.is_argmax:
            return f"argmax (no target sensitivity; {self.positive_class} when it is the most probable class)"
        s = (f"p({self.positive_class}) >= {self.threshold:.6f}, chosen for sensitivity >= "
             f"{self.target_sensitivity:.0%} on {self.n} images ({self.n_positive} {self.positive_class})")
        if self.sensitivity is not None and self.sensitivity_ci95 and self.specificity_ci95:
            (sl, sh), (pl, ph) = self.sensitivity_ci95, self.specificity_ci95
            s += (f": sensitivity {self.sensitivity:.3f} (95% CI {sl:.3f}–{sh:.3f}), "
                  f"specificity {self.specificity:.3f} (95% CI {pl:.3f}–{ph:.3f})")
        if self.fitted_below_minimum:
            s += " [fitted below the minimum number of positives (--force)]"
        return s
