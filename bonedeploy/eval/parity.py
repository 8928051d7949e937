"""Parity of a deployed artefact with the PyTorch fp32 reference, and the gates it must pass.

One implementation for ``bonedeploy export`` (gate every ONNX file) and ``bonedeploy bench``
(report every backend): the same parity set (``select_parity_set``), the same loop running a
backend over it (``backend_logits``), the same comparison and gates. Torch-free: it compares
logits and reads images with numpy.

Label flips and the decision boundary. A *flip* is an image whose predicted class differs between
reference and candidate. Its *margin* is how far the reference was from the decision boundary:
|p_ref(positive) - t| for two classes (t = the threshold, 0.5 for argmax), half the gap between
the two largest reference probabilities otherwise. Reduced precision legitimately moves
probabilities by ~1e-3, so an image sitting on the boundary may flip without anything being wrong;
a flip where the reference was confident (margin > ``flip_margin``, default 0.05, i.e. reference
p(Fractured) outside 0.45-0.55) is a real disagreement. The fp16 gate fails on those and reports,
but tolerates, the near-boundary ones.

At the operating point. A clinic reads the model at its stored threshold on the *calibrated*
p(positive) (``bonedeploy.eval.decision``), not at the argmax, so ``compare`` also reports the
sensitivity and specificity of reference and candidate at that threshold and every image whose
decision differs there (``op_flips``). Every gate fails a candidate whose sensitivity at the
operating point falls by more than ``max_sensitivity_drop`` (default 2 points) below the
reference's. On a small set one missed fracture already moves the sensitivity by more than that
(fewer than 1 / max_sensitivity_drop = 50 positives), so there the rule is exact instead: no
positive case the reference detects may flip to negative (``op_missed_positives`` = 0; without
labels there is no sensitivity and this gate is not applied; ``op_missed_positives`` then counts
reference-positive decisions that flip, for the report).

Out-of-distribution decisions. When the card has an OOD gate, every backend's ``ood_score`` is
compared too, on the parity images and on generated non-radiographs (``ParitySet.probes``): an
*OOD flip* is an image the reference refuses and the candidate answers, or the other way round.
As for labels, an image whose reference score sits within ``ood_margin`` (5%) of the threshold
may flip legitimately (the threshold is itself a validation image's score); the gate fails when
more than ``max_ood_flip_share`` (2%) of the decisions flip away from it, or when the candidate
computes no score at all.
"""

from __future__ import annotations

import tempfile
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any, NamedTuple, Sequence

import numpy as np

from bonedeploy import POSITIVE_CLASS
from bonedeploy.errors import ConfigError, DataError
from bonedeploy.eval.metrics import classify, sensitivity_specificity, softmax
from bonedeploy.data.preprocess import SEED_SPEC, PreprocessSpec
from bonedeploy.artefacts.ood import BLANK_SCORE

DEFAULT_FLIP_MARGIN = 0.05
DEFAULT_OOD_MARGIN = 0.05
SYNTH_N = 48  # synthetic parity images when no real ones exist


@dataclass(frozen=True)
class Gate:
    """Limits one precision must meet; ``None`` means not checked."""

    max_abs_dprob: float | None = None
    max_flips_away: int | None = None  # flips whose reference margin > flip_margin
    min_top1_agreement: float | None = None
    max_accuracy_drop: float | None = None  # fraction: 0.01 = one percentage point
    flip_margin: float = DEFAULT_FLIP_MARGIN
    max_sensitivity_drop: float | None = 0.02  # at the operating point; fraction (0.02 = 2 points)
    # OOD decisions (refuse / answer) that may flip away from the threshold, as a share of all
    max_ood_flip_share: float | None = 0.02
    ood_margin: float = DEFAULT_OOD_MARGIN  # relative distance of the reference score from the OOD threshold

    def __post_init__(self) -> None:
        for name, lo, hi in (("max_abs_dprob", 0.0, 1.0), ("min_top1_agreement", 0.0, 1.0),
                             ("max_accuracy_drop", 0.0, 1.0), ("flip_margin", 0.0, 0.5),
                             ("max_sensitivity_drop", 0.0, 1.0), ("max_ood_flip_share", 0.0, 1.0),
                             ("ood_margin", 0.0, 1.0)):
            v = getattr(self, name)
            if v is not None and not lo <= float(v) <= hi:
                raise ConfigError(f"gate {name} = {v}: must be within [{lo:g}, {hi:g}]")
        if self.max_flips_away is not None and self.max_flips_away < 0:
            raise ConfigError(f"gate max_flips_away = {self.max_flips_away}: must be >= 0")

    def with_(self, **changes: Any) -> "Gate":
        valid = {f.name for f in fields(self)}
        bad = sorted(set(changes) - valid)
        if bad:
            raise ConfigError(f"unknown gate settings {bad}; valid: {', '.join(sorted(valid))}")
        return replace(self, **changes)

    def describe(self) -> str:
        parts = []
        if self.max_abs_dprob is not None:
            parts.append(f"max|Δprob| ≤ {self.max_abs_dprob:g}")
        if self.max_flips_away is not None:
            parts.append(f"≤ {self.max_flips_away} flips with margin > {self.flip_margin:g}")
        if self.min_top1_agreement is not None:
            parts.append(f"top-1 agreement ≥ {self.min_top1_agreement:.0%}")
        if self.max_accuracy_drop is not None:
            parts.append(f"accuracy drop ≤ {self.max_accuracy_drop * 100:g} pt "
                         f"(one image on fewer than {1 / self.max_accuracy_drop:.0f})")
        if self.max_sensitivity_drop is not None:
            parts.append(f"sensitivity drop at the operating point ≤ {self.max_sensitivity_drop * 100:g} pt "
                         f"(< {self.small_set_positives()} positives: no positive flipped to negative)")
        if self.max_ood_flip_share is not None:
            parts.append(f"OOD decisions flipped away from the threshold (> {self.ood_margin:.0%}) "
                         f"≤ {self.max_ood_flip_share:.0%}")
        return ", ".join(parts) or "none"

    def small_set_positives(self) -> int:
        """Below this many positives one missed case moves sensitivity by more than the limit."""
        d = self.max_sensitivity_drop
        return int(np.ceil(1 / d - 1e-9)) if d else 0


GATES: dict[str, Gate] = {
    "fp32": Gate(max_abs_dprob=1e-4),
    "fp16": Gate(max_abs_dprob=1e-2, max_flips_away=0),
    "int8": Gate(min_top1_agreement=0.98, max_accuracy_drop=0.01),
}
"""Default gates per precision (documented in the README; override per run)."""


@dataclass(frozen=True)
class Flip:
    index: int
    path: str
    ref_class: str
    cand_class: str
    ref_prob: float  # reference p(positive class), or its top-1 probability beyond two classes
    cand_prob: float
    margin: float  # reference distance from the decision boundary

    def near_boundary(self, flip_margin: float = DEFAULT_FLIP_MARGIN) -> bool:
        return self.margin <= flip_margin


@dataclass
class ParityResult:
    n: int
    classes: tuple[str, ...]
    threshold: float | None
    max_abs_dprob: float
    mean_abs_dprob: float
    top1_agreement: float
    flips: list[Flip] = field(default_factory=list)
    nonfinite: int = 0  # candidate rows with NaN/inf logits (fp16 overflow)
    labelled: bool = False
    accuracy_ref: float | None = None
    accuracy_cand: float | None = None
    accuracy_delta: float | None = None
    sensitivity_ref: float | None = None
    sensitivity_cand: float | None = None
    sensitivity_delta: float | None = None
    specificity_ref: float | None = None
    specificity_cand: float | None = None
    specificity_delta: float | None = None
    # at the operating point (the card's temperature and threshold: eval.decision.DecisionRule)
    decision: dict[str, Any] | None = None
    op_agreement: float | None = None
    op_flips: list[dict[str, Any]] = field(default_factory=list)
    op_n_positive: int | None = None  # labelled positives (without labels: reference-positive decisions)
    op_missed_positives: int | None = None  # of those, detected by the reference, missed by the candidate
    op_sensitivity_ref: float | None = None
    op_sensitivity_cand: float | None = None
    op_sensitivity_delta: float | None = None
    op_specificity_ref: float | None = None
    op_specificity_cand: float | None = None
    op_specificity_delta: float | None = None
    # out-of-distribution decisions (the card's OOD gate), on the parity images and the probes
    ood_threshold: float | None = None
    ood_n: int | None = None
    ood_scored: bool | None = None  # False: the candidate computes no ood_score
    ood_agreement: float | None = None
    ood_refused_ref: int | None = None
    ood_refused_cand: int | None = None
    ood_flips: list[dict[str, Any]] = field(default_factory=list)
    ood_flips_away: int | None = None
    ood_max_rel_dscore: float | None = None  # largest |cand - ref| / max(|ref|, |threshold|)

    def flips_away(self, flip_margin: float = DEFAULT_FLIP_MARGIN) -> list[Flip]:
        return [f for f in self.flips if not f.near_boundary(flip_margin)]

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["classes"] = list(self.classes)
        d["flips"] = [{**asdict(f), "near_boundary": f.near_boundary()} for f in self.flips]
        d["flips_away"] = len(self.flips_away())
        return d


@dataclass(frozen=True)
class OODCheck:
    """Reference and candidate ``ood_score`` on the same images (the candidate's None when it
    computes none), the gate that reads them and the images' names."""

    gate: Any  # artefacts.ood.OODGate
    ref: np.ndarray
    cand: np.ndarray | None
    names: Sequence[str]


def compare(ref_logits: np.ndarray, cand_logits: np.ndarray, paths: Sequence[str | Path],
            classes: Sequence[str], labels: Sequence[int] | None = None,
            threshold: float | None = None, decision: Any = None, ood: OODCheck | None = None) -> ParityResult:
    """Compare candidate logits with the reference's on the same images (softmax probabilities);
    ``decision`` (a ``DecisionRule``, default the argmax of uncalibrated probabilities) adds the
    figures at the operating point, ``ood`` the out-of-distribution decisions."""
    ref = np.asarray(ref_logits, dtype=np.float64)
    cand = np.asarray(cand_logits, dtype=np.float64)
    if ref.shape != cand.shape or ref.ndim != 2 or len(paths) != len(ref):
        raise ValueError(f"parity: reference {ref.shape}, candidate {cand.shape} and "
                         f"{len(paths)} paths do not line up")
    classes = tuple(classes)
    finite = np.isfinite(cand).all(axis=1)
    p_ref = softmax(ref, np.float64)
    p_cand = softmax(np.where(np.isfinite(cand), cand, 0.0), np.float64)
    dprob = np.abs(p_ref - p_cand).max(axis=1) if len(ref) else np.zeros(0)
    dprob = np.where(finite, dprob, np.inf)
    y_ref, y_cand = classify(p_ref, classes, threshold), classify(p_cand, classes, threshold)
    y_cand = np.where(finite, y_cand, -1)
    score, margin = _margins(p_ref, p_cand, classes, threshold)
    flips = [Flip(int(i), str(paths[i]), classes[y_ref[i]], classes[y_cand[i]] if y_cand[i] >= 0 else "NaN",
                  float(score[0][i]), float(score[1][i]), float(margin[i]))
             for i in np.flatnonzero(y_ref != y_cand)]
    n = len(ref)
    res = ParityResult(
        n=n, classes=classes, threshold=threshold,
        max_abs_dprob=float(dprob.max()) if n else 0.0, mean_abs_dprob=float(dprob.mean()) if n else 0.0,
        top1_agreement=float((y_ref == y_cand).mean()) if n else 1.0, flips=flips,
        nonfinite=int((~finite).sum()),
    )
    if labels is not None and n:
        _add_accuracy(res, np.asarray(labels, dtype=int), y_ref, y_cand, classes)
    _add_operating_point(res, ref, cand, finite, paths, labels, decision)
    if ood is not None:
        _add_ood(res, ood)
    return res


def _add_ood(res: ParityResult, ood: OODCheck, margin: float = DEFAULT_OOD_MARGIN) -> None:
    t = ood.gate.threshold
    res.ood_threshold, res.ood_n, res.ood_scored = t, len(ood.ref), ood.cand is not None
    refused_ref = ood.gate.rejects(ood.ref)
    res.ood_refused_ref = int(refused_ref.sum())
    if ood.cand is None:
        return
    refused_cand = ood.gate.rejects(ood.cand)
    res.ood_refused_cand = int(refused_cand.sum())
    res.ood_agreement = float((refused_ref == refused_cand).mean()) if len(ood.ref) else 1.0
    scale = abs(t) or 1.0
    finite = np.isfinite(ood.ref) & np.isfinite(ood.cand) & (np.abs(ood.ref) < BLANK_SCORE)
    ref = np.asarray(ood.ref, np.float64)[finite]
    d = np.abs(np.asarray(ood.cand, np.float64)[finite] - ref) / np.maximum(np.abs(ref), scale)
    res.ood_max_rel_dscore = float(d.max()) if len(d) else 0.0
    res.ood_flips = [{"name": str(ood.names[i]), "ref_score": float(ood.ref[i]), "cand_score": float(ood.cand[i]),
                      "ref_refused": bool(refused_ref[i]), "near_threshold": bool(abs(ood.ref[i] - t) <= margin * scale)}
                     for i in np.flatnonzero(refused_ref != refused_cand)]
    res.ood_flips_away = sum(not f["near_threshold"] for f in res.ood_flips)


def _add_operating_point(res: ParityResult, ref: np.ndarray, cand: np.ndarray, finite: np.ndarray,
                         paths, labels, decision) -> None:
    from bonedeploy.eval.decision import DecisionRule

    rule = decision if decision is not None else DecisionRule(res.classes)
    res.decision = rule.describe()
    p_ref, d_ref = rule.apply(ref)
    p_cand, d_cand = rule.apply(np.where(np.isfinite(cand), cand, 0.0))
    d_cand = np.where(finite, d_cand, -1)
    pos = rule.positive_index
    k = pos if pos is not None else 0
    res.op_agreement = float((d_ref == d_cand).mean()) if res.n else 1.0
    res.op_flips = [{"index": int(i), "path": str(paths[i]), "ref_class": res.classes[d_ref[i]],
                     "cand_class": res.classes[d_cand[i]] if d_cand[i] >= 0 else "NaN",
                     "ref_prob": float(p_ref[i, k]), "cand_prob": float(p_cand[i, k])}
                    for i in np.flatnonzero(d_ref != d_cand)]
    if pos is None:
        return
    y = np.asarray(labels, dtype=int) if labels is not None else None
    positive = (y == pos) if y is not None else (d_ref == pos)
    res.op_n_positive = int(positive.sum())
    res.op_missed_positives = int((positive & (d_ref == pos) & (d_cand != pos)).sum())
    if y is None:
        return
    ref_rates = sensitivity_specificity(y, d_ref, pos)
    cand_rates = sensitivity_specificity(y, d_cand, pos)
    for name, r, c in zip(("sensitivity", "specificity"), ref_rates, cand_rates):
        if r is not None and c is not None:
            setattr(res, f"op_{name}_ref", r)
            setattr(res, f"op_{name}_cand", c)
            setattr(res, f"op_{name}_delta", c - r)


def _margins(p_ref: np.ndarray, p_cand: np.ndarray, classes: tuple[str, ...],
             threshold: float | None) -> tuple[tuple[np.ndarray, np.ndarray], np.ndarray]:
    if len(classes) == 2 and POSITIVE_CLASS in classes:
        pos = classes.index(POSITIVE_CLASS)
        t = 0.5 if threshold is None else threshold
        return (p_ref[:, pos], p_cand[:, pos]), np.abs(p_ref[:, pos] - t)
    top2 = np.sort(p_ref, axis=1)[:, -2:]
    return (top2[:, 1], p_cand.max(axis=1)), (top2[:, 1] - top2[:, 0]) / 2


def _add_accuracy(res: ParityResult, y: np.ndarray, y_ref: np.ndarray, y_cand: np.ndarray,
                  classes: tuple[str, ...]) -> None:
    res.labelled = True
    res.accuracy_ref = float((y_ref == y).mean())
    res.accuracy_cand = float((y_cand == y).mean())
    res.accuracy_delta = res.accuracy_cand - res.accuracy_ref
    if POSITIVE_CLASS not in classes:
        return
    pos = classes.index(POSITIVE_CLASS)
    ref = sensitivity_specificity(y, y_ref, pos)
    cand = sensitivity_specificity(y, y_cand, pos)
    for name, r, c in zip(("sensitivity", "specificity"), ref, cand):
        if r is None or c is None:
            continue
        setattr(res, f"{name}_ref", r)
        setattr(res, f"{name}_cand", c)
        setattr(res, f"{name}_delta", c - r)


def allowed_accuracy_drop(max_drop: float, n: int | None) -> float:
    """The drop a gate allows on ``n`` images: never less than one image. On fewer images than
    1 / ``max_drop`` the stated drop is less than one image, and the gate would demand no flip to a
    wrong answer at all (stricter than its top-1 agreement, which allows one); missed positives
    are the sensitivity check's."""
    return max(max_drop, 1 / n) if n else max_drop


def check_gate(result: ParityResult, precision: str, gates: dict[str, Gate] | None = None) -> list[str]:
    """Every way ``result`` misses the gate for ``precision`` (empty list: it passes)."""
    gates = GATES if gates is None else gates
    if precision not in gates:
        raise ConfigError(f"no parity gate for precision {precision!r}; valid: {', '.join(gates)}")
    g, out = gates[precision], []
    if result.nonfinite:
        out.append(f"{result.nonfinite} image(s) gave NaN/inf logits")
    if g.max_abs_dprob is not None and not result.max_abs_dprob <= g.max_abs_dprob:
        out.append(f"max |Δprob| {result.max_abs_dprob:.2e} > {g.max_abs_dprob:g}")
    if g.max_flips_away is not None:
        away = result.flips_away(g.flip_margin)
        if len(away) > g.max_flips_away:
            names = ", ".join(Path(f.path).name for f in away[:3]) + (" …" if len(away) > 3 else "")
            out.append(f"{len(away)} label flip(s) away from the boundary (margin > {g.flip_margin:g}): {names}")
    if g.min_top1_agreement is not None and result.top1_agreement < g.min_top1_agreement:
        out.append(f"top-1 agreement {result.top1_agreement:.1%} < {g.min_top1_agreement:.0%}")
    if (g.max_accuracy_drop is not None and result.accuracy_delta is not None
            and -result.accuracy_delta > allowed_accuracy_drop(g.max_accuracy_drop, result.n) + 1e-12):
        out.append(f"accuracy drop {-result.accuracy_delta * 100:.1f} pt > {g.max_accuracy_drop * 100:g} pt"
                   + (" (and more than one image)" if result.n and 1 / result.n > g.max_accuracy_drop else ""))
    out += _operating_point_failures(result, g)
    out += _ood_failures(result, g)
    return out


def ood_summary(name: str, parity: dict[str, Any]) -> str | None:
    """One report line: a file's OOD decisions against the reference's (``ParityResult.to_dict()``),
    None when the card has no OOD gate."""
    n = parity.get("ood_n")
    if not n:
        return None
    if not parity.get("ood_scored"):
        return f"{name}: OOD decisions: the file computes no ood_score (the card's gate cannot be applied)"
    flips = parity.get("ood_flips") or []
    near = sum(f["near_threshold"] for f in flips)
    return (f"{name}: OOD decisions agree with the reference on {parity['ood_agreement']:.1%} of {n} images "
            f"(refused {parity['ood_refused_cand']} vs {parity['ood_refused_ref']}; {len(flips)} flip(s), "
            f"{near} within 5% of the threshold; score within {parity['ood_max_rel_dscore']:.1%})")


def _ood_failures(result: ParityResult, g: Gate) -> list[str]:
    if g.max_ood_flip_share is None or not result.ood_n:
        return []  # no OOD gate in the card
    if not result.ood_scored:
        return ["the card has an OOD gate but the candidate computes no ood_score"]
    away = [f for f in result.ood_flips if abs(f["ref_score"] - result.ood_threshold)
            > g.ood_margin * (abs(result.ood_threshold) or 1.0)]
    if len(away) > g.max_ood_flip_share * result.ood_n + 1e-9:
        names = ", ".join(Path(f["name"]).name for f in away[:3]) + (" …" if len(away) > 3 else "")
        return [f"{len(away)} of {result.ood_n} OOD decisions flip away from the threshold "
                f"(> {g.max_ood_flip_share:.0%}): {names}"]
    return []


def _operating_point_failures(result: ParityResult, g: Gate) -> list[str]:
    if g.max_sensitivity_drop is None or result.op_sensitivity_delta is None:
        return []  # sensitivity needs labelled positives
    at = (result.decision or {}).get("rule", "the operating point")
    if result.op_n_positive < g.small_set_positives():
        if result.op_missed_positives:
            names = [Path(f["path"]).name for f in result.op_flips
                     if f["ref_class"] == POSITIVE_CLASS and f["cand_class"] != POSITIVE_CLASS][:3]
            return [f"{result.op_missed_positives} positive case(s) detected by the reference are missed at "
                    f"{at} (small set: {result.op_n_positive} positives < {g.small_set_positives()}, "
                    f"so none may flip): {', '.join(names)}"]
        return []
    if result.op_sensitivity_delta is not None and -result.op_sensitivity_delta > g.max_sensitivity_drop + 1e-12:
        return [f"sensitivity at {at} drops {-result.op_sensitivity_delta * 100:.1f} pt > "
                f"{g.max_sensitivity_drop * 100:g} pt"]
    return []


# --- the parity set ----------------------------------------------------------------------
DATA_FOLDER = "data folder"
CHECKPOINT_SPLIT = "checkpoint validation split"
SYNTHETIC = "synthetic"
KINDS = (DATA_FOLDER, CHECKPOINT_SPLIT, SYNTHETIC)
PARITY_BATCH = 16  # images per backend call: inside every engine profile's default range


@dataclass(frozen=True, eq=False)
class ParitySet:
    """The images every artefact is compared on, and where they came from (for reports).

    ``paths`` name each image (flips are reported by them); synthetic images live in a folder
    deleted once decoded, so theirs are names (``synthetic/...``), not files, and ``root`` is None.
    """

    x: np.ndarray                 # N x C x H x W float32, preprocessed with the model's spec
    labels: np.ndarray | None     # N int labels, or None when unlabelled
    paths: tuple[str, ...]
    kind: str                     # one of KINDS
    root: str | None = None       # the image folder, None for synthetic images
    # generated non-radiographs, for the OOD decisions only (``with_probes``), and their names
    probes: np.ndarray | None = None
    probe_names: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"parity set kind {self.kind!r}; valid: {', '.join(KINDS)}")
        object.__setattr__(self, "x", np.ascontiguousarray(self.x, dtype=np.float32))
        if self.labels is not None:
            object.__setattr__(self, "labels", np.asarray(self.labels, dtype=int))
        object.__setattr__(self, "paths", tuple(str(p) for p in self.paths))
        if len(self.paths) != len(self.x) or (self.labels is not None and len(self.labels) != len(self.x)):
            raise ValueError(f"parity set: {len(self.x)} images, {len(self.paths)} paths and "
                             f"{'no' if self.labels is None else len(self.labels)} labels do not line up")
        if self.probes is not None:
            object.__setattr__(self, "probes", np.ascontiguousarray(self.probes, dtype=np.float32))
            object.__setattr__(self, "probe_names", tuple(self.probe_names))
            if len(self.probe_names) != len(self.probes):
                raise ValueError("parity set: probes and their names do not line up")

    @property
    def ood_names(self) -> tuple[str, ...]:
        """The names of the images OOD scores are compared on: the parity images, then the probes."""
        return self.paths + self.probe_names

    def __len__(self) -> int:
        return len(self.x)

    @property
    def labelled(self) -> bool:
        return self.labels is not None

    def describe(self) -> dict[str, Any]:
        """What export.json and the bench report record about the set."""
        d = {"kind": self.kind, "n": len(self), "root": self.root, "labelled": self.labelled}
        if self.probes is not None:
            d["ood_probes"] = len(self.probes)
        return d


PROBE_SEED = 1802  # the gate's probes: neither the fit's seed nor the benchmark's
PROBES_PER_KIND = 4


def with_probes(ps: ParitySet, spec: PreprocessSpec, per_kind: int = PROBES_PER_KIND) -> ParitySet:
    """``ps`` plus generated non-radiographs, on which the OOD decisions are compared too."""
    from bonedeploy.eval.ood import PROBE_KINDS, probe_images

    probes = probe_images(spec, per_kind, PROBE_SEED, PROBE_KINDS)
    names = tuple(f"probe/{k}-{i}" for k, x in probes.items() for i in range(len(x)))
    return replace(ps, probes=np.concatenate(list(probes.values())), probe_names=names)


class Outputs(NamedTuple):
    """What a backend gives over a parity set: logits of the parity images and the OOD scores of
    the parity images then the probes (None: it computes none)."""

    logits: np.ndarray
    ood: np.ndarray | None


def backend_outputs(backend: Any, parity_set: ParitySet | np.ndarray, batch: int = PARITY_BATCH) -> Outputs:
    """``backend_logits`` and, when the backend gives them, the OOD scores (see ``Outputs``)."""
    ps = parity_set if isinstance(parity_set, ParitySet) else None
    x = ps.x if ps is not None else parity_set
    logits, scores = _scored(backend, x, batch)
    if scores is not None and ps is not None and ps.probes is not None:
        scores = np.concatenate([scores, _scored(backend, ps.probes, batch)[1]])
    return Outputs(logits, scores)


def _scored(backend: Any, x: np.ndarray, batch: int) -> tuple[np.ndarray, np.ndarray | None]:
    step = max(1, int(batch))
    parts = [backend.infer_scored(x[i:i + step]) for i in range(0, len(x), step)]
    if not parts:
        raise DataError("parity: no images to run")
    logits = np.concatenate([np.asarray(p[0], dtype=np.float32) for p in parts])
    if any(p[1] is None for p in parts):
        return logits, None
    return logits, np.concatenate([np.asarray(p[1], dtype=np.float32).reshape(-1) for p in parts])


def select_parity_set(ckpt: dict[str, Any] | None = None, data: str | Path | None = None,
                      spec: PreprocessSpec = SEED_SPEC, n: int | None = None, seed: int = 0,
                      classes: Sequence[str] | None = None) -> ParitySet:
    """The parity set for ``bonedeploy export`` and ``bonedeploy bench`` (one rule for both).

    Precedence: an explicit ``data`` folder (an image-folder tree) wins; else the checkpoint's
    recorded validation split when its folder exists here; else ``n`` (default 48) synthetic
    radiographs. ``n`` caps the real sets (evenly spaced over the sorted list). ``classes``
    (default: the checkpoint card's) must match the folders' classes.
    """
    classes = tuple(classes or ((ckpt or {}).get("card") or {}).get("classes") or ()) or None
    if data is not None:
        return _from_tree(Path(data), spec, n, classes)
    split = _usable_split(ckpt)
    if split is not None:
        root = Path(split["root"])
        entries = [(Path(e["path"]), int(e["label"])) for e in split["val"]]
        _check_classes(tuple(split.get("classes") or classes or ()), classes, root)
        return _decode(root, _spread(entries, n), spec, CHECKPOINT_SPLIT)
    return _synthetic(spec, n or SYNTH_N, seed, classes)


def backend_logits(backend: Any, parity_set: ParitySet | np.ndarray, batch: int = PARITY_BATCH) -> np.ndarray:
    """Float32 logits of a loaded backend over the set (or an N x C x H x W array), ``batch``
    images per call: the one loop export's gate, bench and calibration run every artefact
    (PyTorch, onnxruntime, TensorRT) through."""
    x = parity_set.x if isinstance(parity_set, ParitySet) else parity_set
    step = max(1, int(batch))
    parts = [np.asarray(backend.infer(x[i:i + step]), dtype=np.float32) for i in range(0, len(x), step)]
    if not parts:
        raise DataError("parity: no images to run")
    return np.concatenate(parts)


def _usable_split(ckpt: dict[str, Any] | None) -> dict[str, Any] | None:
    split = (ckpt or {}).get("split") or {}
    if split.get("root") and split.get("val") and Path(split["root"]).is_dir():
        return split
    return None


def _from_tree(root: Path, spec: PreprocessSpec, n: int | None, classes) -> ParitySet:
    from bonedeploy.data.folders import known_classes, scan_image_folder

    scan = scan_image_folder(root, known_classes(root, classes))
    _check_classes(tuple(scan.classes), classes, root)
    return _decode(root, _spread(list(scan.items), n), spec, DATA_FOLDER)


def _synthetic(spec: PreprocessSpec, n: int, seed: int, classes) -> ParitySet:
    from bonedeploy.data.synth import SynthConfig, generate_dataset

    with tempfile.TemporaryDirectory(prefix="bonedeploy-parity-") as tmp:
        root = Path(tmp) / "synthetic"
        generate_dataset(root, SynthConfig(n=max(2, n), seed=seed))  # the seed geometry (400 px crop)
        from bonedeploy.data.folders import scan_image_folder

        scan = scan_image_folder(root)
        _check_classes(tuple(scan.classes), classes, "synthetic set")
        return _decode(root, list(scan.items), spec, SYNTHETIC)


def _check_classes(found: tuple[str, ...], expected: tuple[str, ...] | None, where: Any) -> None:
    if expected and found and tuple(found) != tuple(expected):
        raise DataError(f"{where}: classes {list(found)} do not match the model's {list(expected)}")


def _spread(items: list, n: int | None) -> list:
    if n is None or len(items) <= n:
        return items
    idx = np.unique(np.linspace(0, len(items) - 1, n).round().astype(int))
    return [items[i] for i in idx]


def _decode(root: Path, items: list, spec: PreprocessSpec, kind: str) -> ParitySet:
    from bonedeploy.data.decode import decode_dataset

    if not items:
        raise DataError(f"{root}: no images for the parity check")
    ds = decode_dataset(root, [(Path(p), int(y)) for p, y in items], spec, skip_bad=True)
    if len(ds.x) == 0:
        raise DataError(f"{root}: none of the parity images could be read")
    # Synthetic images live in a folder deleted on return: name them, do not point at them.
    synthetic = kind == SYNTHETIC
    names = [f"synthetic/{Path(p).relative_to(root).as_posix()}" if synthetic else str(p) for p in ds.paths]
    return ParitySet(ds.x, ds.y, names, kind, None if synthetic else str(root))
