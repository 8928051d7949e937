"""Accuracy-aware mixed precision at export: when int8 or fp16 fails its gate, search for the
cheapest variant that passes, and record what it cost.

int8:

1. float islands: the nodes of the failed file, ranked by the error their own quantisation adds
   (``sensitivity``), and the fewest of them kept float (``nodes_to_exclude``): the shortest
   prefix of the ranking that passes (doubling, then bisection), then every node whose removal
   still passes is dropped again;
2. the other calibration recipes (MinMax, Entropy, Percentile x per-channel, per-tensor weights)
   while the budget lasts, unless the island already keeps ``good_enough_speed`` of the plain
   file's throughput: a recipe that passes keeps every layer int8 and loses no speed, so it wins.

fp16 has step 2 only (``node_block_list``, float16 rounding as the local error). Each candidate is
an ordinary ONNX file, gated like every exported file on the whole parity set; ``max_checks``
bounds the gate checks. Ranking by measured local error rather than by reverting each candidate
(NNCF's ``quantize_with_accuracy_control``) costs one tapped run instead of one check per node.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from bonedeploy.errors import ConfigError
from bonedeploy.export.precision import CALIBRATION_METHODS, DEFAULT_CALIBRATION, QuantOptions

Log = Callable[[str], None]
REPAIRABLE = ("fp16", "int8")
NOT_NEEDED, REPAIRED, FAILED = "not needed", "repaired", "failed"


@dataclass(frozen=True)
class RepairConfig:
    precisions: tuple[str, ...] = ("int8",)  # ``--repair``: int8 by default, () = off
    max_checks: int = 16  # gate checks after the first failure (each: a build and a parity run)
    # No new check starts once the repair has taken this multiple of the export's time before it
    # (None: no time limit), so an export with a repair stays within ~2x one without.
    time_ratio: float | None = 0.8
    max_float_fraction: float = 0.5  # of the ranked candidate nodes
    calibrations: tuple[str, ...] = CALIBRATION_METHODS  # int8 recipes tried after the islands
    # An island keeping this share of the plain file's throughput ends the search: a calibration
    # recipe could win back at most the rest, at the price of a calibration pass each.
    good_enough_speed: float = 0.95
    throughput_batch: int = 8
    throughput_s: float = 1.5  # timing per file and round
    throughput_rounds: int = 2  # interleaved rounds, best kept

    def __post_init__(self) -> None:
        bad = [p for p in self.precisions if p not in REPAIRABLE]
        if bad:
            raise ConfigError(f"--repair {','.join(self.precisions)}: valid: off, {', '.join(REPAIRABLE)}")
        if self.max_checks < 1 or not 0 < self.max_float_fraction <= 1:
            raise ConfigError(f"repair budget: max_checks {self.max_checks} must be >= 1 and "
                              f"max_float_fraction {self.max_float_fraction} within (0, 1]")
        bad = [m for m in self.calibrations if m not in CALIBRATION_METHODS]
        if bad:
            raise ConfigError(f"repair calibrations {bad}; valid: {', '.join(CALIBRATION_METHODS)}")

    @classmethod
    def parse(cls, text: str | None) -> "RepairConfig":
        """``--repair off|int8|fp16|int8,fp16`` (None: the default)."""
        if text is None:
            return cls()
        items = tuple(s.strip().lower() for s in str(text).split(",") if s.strip())
        return cls(precisions=() if items in ((), ("off",)) else items)


@dataclass(frozen=True)
class Fp16Recipe:
    """fp16 with ``float_nodes`` kept in fp32."""

    float_nodes: tuple[str, ...] = ()

    def describe(self) -> dict[str, Any]:
        return {"fp32_nodes": list(self.float_nodes)}

    def label(self) -> str:
        return f"fp16, {len(self.float_nodes)} node(s) fp32" if self.float_nodes else "fp16"


@dataclass
class Attempt:
    label: str
    recipe: dict[str, Any]
    passed: bool
    failures: list[str]
    top1_agreement: float
    op_agreement: float | None
    op_flips: int
    missed_positives: int | None
    mean_abs_dprob: float
    seconds: float

    def score(self) -> tuple:
        """Higher is better: passes, misses no positive, flips fewer decisions, agrees more."""
        return (self.passed, -(self.missed_positives or 0), -self.op_flips, self.top1_agreement,
                -self.mean_abs_dprob)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass
class RepairResult:
    precision: str
    status: str  # NOT_NEEDED | REPAIRED | FAILED
    attempts: list[Attempt] = field(default_factory=list)
    chosen: Attempt | None = None
    kept_float: list[dict[str, Any]] = field(default_factory=list)
    ranking: list[dict[str, Any]] = field(default_factory=list)
    throughput: dict[str, Any] | None = None
    seconds: float = 0.0  # the whole repair: search, and throughput measurement when repaired
    path: Path | None = None  # the chosen candidate's staged file
    stopped: str | None = None  # the budget that ended the search early, if one did

    def card_record(self) -> dict[str, Any]:
        """What the repaired file's card keeps: the recipe, the float layers and why, the cost."""
        return {"status": self.status, "recipe": self.chosen.recipe if self.chosen else None,
                "kept_float": self.kept_float, "throughput": self.throughput,
                "checks": len(self.attempts) - 1, "stopped": self.stopped, "seconds": round(self.seconds, 1)}

    def to_dict(self) -> dict[str, Any]:
        return {**self.card_record(), "precision": self.precision,
                "attempts": [a.to_dict() for a in self.attempts], "ranking": self.ranking[:20]}


# --- the search ---------------------------------------------------------------------------
Check = Callable[[Any], tuple[Attempt, Path]]  # recipe -> its verdict and staged file


class Search:
    """Candidates tried so far (the failed first one included) within ``max_checks`` more, and
    their staged files; a failed candidate's file is deleted at once (they are model-sized)."""

    def __init__(self, check: Check, max_checks: int, log: Log, first: tuple[Attempt, Path],
                 deadline: float | None = None):
        self.check, self.max_checks, self.log, self.deadline = check, max_checks, log, deadline
        self.attempts: list[Attempt] = [first[0]]
        self.files: list[Path | None] = [first[1]]
        self.stopped: str | None = None  # why the search ended before it was done

    @property
    def left(self) -> int:
        return self.max_checks - (len(self.attempts) - 1)

    def attempt(self, recipe: Any) -> Attempt | None:
        if self.left <= 0:
            self.stopped = f"check budget spent: {self.max_checks}"
            return None
        if self.deadline is not None and time.perf_counter() > self.deadline:
            self.stopped = "time budget spent"
            return None
        a, path = self.check(recipe)
        if not a.passed:
            path.unlink(missing_ok=True)
        self.attempts.append(a)
        self.files.append(path if a.passed else None)
        self.log(f"  {a.label}: {'pass' if a.passed else 'fail'} (agreement {a.top1_agreement:.1%}, "
                 f"{a.op_flips} decision flip(s), {a.missed_positives or 0} positive(s) missed)")
        return a

    def file_of(self, a: Attempt) -> Path | None:
        return self.files[next(i for i, b in enumerate(self.attempts) if b is a)]


def search_calibration(search: Search, methods: tuple[str, ...]) -> Attempt | None:
    """The int8 recipes without float nodes (the cheapest repair there is: no speed lost),
    cheapest to try first; the best passing one, or ``None``."""
    recipes = [(m, pc) for pc in (True, False) for m in methods if (m, pc) != (DEFAULT_CALIBRATION, True)]
    recipes.sort(key=lambda r: (r[0] != DEFAULT_CALIBRATION, not r[1]))  # no new calibration first
    passing = []
    for method, per_channel in recipes:
        a = search.attempt(QuantOptions(method, per_channel))
        if a is None:
            break
        if a.passed:
            passing.append(a)
    return max(passing, key=Attempt.score) if passing else None


def search_islands(search: Search, base: Any, ranked: list[str]) -> Attempt | None:
    """The fewest of ``ranked`` to keep float so that ``base`` passes, or ``None``."""
    def with_float(nodes) -> Attempt | None:
        return search.attempt(dataclasses.replace(base, float_nodes=tuple(nodes)))

    sizes, k = [], 1
    while ranked:
        sizes.append(min(k, len(ranked)))
        if k >= len(ranked):
            break
        k *= 2
    lo, hi, passing = 0, None, None
    for k in sizes:  # doubling: 1, 2, 4, ... all
        a = with_float(ranked[:k])
        if a is None:
            return None
        if a.passed:
            hi, passing = k, a
            break
        lo = k
    if hi is None:
        return None
    while hi - lo > 1:  # bisection between the last failing and the first passing prefix
        mid = (lo + hi) // 2
        a = with_float(ranked[:mid])
        if a is None:
            return passing
        if a.passed:
            hi, passing = mid, a
        else:
            lo = mid
    kept = list(ranked[:hi])
    for node in reversed(kept[:-1]):  # the last one is needed: the prefix without it failed
        trial = [n for n in kept if n != node]
        a = with_float(trial)
        if a is None:
            break
        if a.passed:
            kept, passing = trial, a
    return passing


def choose(search: Search, precision: str, base: Any, rank: Callable[[Any], list[dict[str, Any]]],
           budget: RepairConfig, speed: Callable[[Attempt], float] | None = None) -> RepairResult:
    """Float islands from the failed ``base`` recipe, then (int8) the calibration recipes, which
    win when one passes: they keep every layer int8. ``speed`` (the island's throughput over the
    plain file's) skips the recipes when the island already costs less than they could win back."""
    t0 = time.perf_counter()
    result = RepairResult(precision, FAILED)
    search.log(f"ranking {precision} nodes by their local error ({base.label()}) ...")
    result.ranking = rank(base)
    n = max(1, int(len(result.ranking) * budget.max_float_fraction))
    best = search_islands(search, base, [r["node"] for r in result.ranking[:n]])
    cheap = best is not None and speed is not None and speed(best) >= budget.good_enough_speed
    if cheap:
        search.stopped = (f"the float island keeps >= {budget.good_enough_speed:.0%} of the plain file's "
                          "throughput: calibration recipes not tried")
    elif precision == "int8" and budget.calibrations:
        best = search_calibration(search, budget.calibrations) or best
    result.attempts = search.attempts
    if best is not None and best.passed:
        result.status, result.chosen, result.path = REPAIRED, best, search.file_of(best)
        result.kept_float = _why(best, result.ranking)
    result.stopped = search.stopped  # a repaired search may have left recipes untried too
    if result.status == FAILED and result.stopped is None:
        result.stopped = f"every candidate tried ({n} ranked nodes, then the calibration recipes)"
    result.seconds = time.perf_counter() - t0
    return result


def _why(a: Attempt, ranking: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each float node with the local error its quantisation added (what keeping it float removed)."""
    nodes = a.recipe.get("float_nodes") or a.recipe.get("fp32_nodes") or []
    by_node = {r["node"]: r for r in ranking}
    return [{k: v for k, v in by_node.get(n, {"node": n}).items() if k != "score"} for n in nodes]


def repair_summary(name: str, repair: dict[str, Any] | None) -> list[str]:
    """What the terminal says about a file's repair: what was kept and what it cost, or, when
    nothing passed, every candidate tried."""
    if not repair:
        return []
    if repair["status"] == REPAIRED:
        kept = ", ".join(f"{k['node']} ({k.get('op')}, layer {k.get('layer')})" for k in repair["kept_float"])
        t = repair.get("throughput") or {}
        cost = f"; throughput {t['ratio']:.0%} of the unrepaired file's at batch {t['batch']}" if t.get("ratio") else ""
        recipe = repair["recipe"] or {}
        return [f"{name}: repaired after {repair['checks']} check(s): {recipe.get('calibration_method', 'fp16')}"
                + (f", per-{'channel' if recipe.get('per_channel') else 'tensor'} weights" if "per_channel" in recipe else "")
                + (f"; kept float: {kept}" if kept else "; no layer kept float") + cost]
    lines = [f"{name}: no repair passed its gate ({repair['checks']} check(s)"
             + (f", {repair['stopped']}" if repair.get("stopped") else "") + "); tried:"]
    lines += [f"  {a['label']}: agreement {a['top1_agreement']:.1%}, {a['op_flips']} decision flip(s); "
              + ("; ".join(a["failures"]) or "passed") for a in repair["attempts"]]
    return lines
