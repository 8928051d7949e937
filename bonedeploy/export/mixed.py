"""The repair inside ``bonedeploy export``: build each candidate the search asks for, gate it
like any exported file, and measure what the chosen one costs in speed (``export.repair``).

Candidates are written to the export's staging folder; the chosen one replaces the failed file
there, with its recipe, float layers and measured cost in its model card.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Callable

import numpy as np

from bonedeploy.export import gate
from bonedeploy.export import onnx as ox
from bonedeploy.export.repair import Attempt, RepairConfig, RepairResult, Search, choose
from bonedeploy.export.results import ExportedFile, Reference

Log = Callable[[str], None]


def attempt_of(label: str, recipe: dict[str, Any], f: ExportedFile, seconds: float) -> Attempt:
    p = f.parity or {}
    return Attempt(label=label, recipe=recipe, passed=f.passed, failures=list(f.failures),
                   top1_agreement=float(p.get("top1_agreement", 0.0)), op_agreement=p.get("op_agreement"),
                   op_flips=len(p.get("op_flips") or []), missed_positives=p.get("op_missed_positives"),
                   mean_abs_dprob=float(p.get("mean_abs_dprob", 0.0)), seconds=round(seconds, 1))


class Repairer:
    """Everything one precision's search needs: how to build a recipe, the reference, the gate."""

    def __init__(self, precision: str, build: Callable[[Any], Any], rank: Callable[[Any], list[dict]],
                 reference: Reference, classes, gates, decision, stage: Path, log: Log):
        self.precision, self.build, self.rank = precision, build, rank
        self.reference, self.classes, self.gates, self.decision = reference, classes, gates, decision
        self.stage, self.log = stage, log
        self._n = 0

    def check(self, recipe: Any) -> tuple[Attempt, Path]:
        t0 = time.perf_counter()
        self._n += 1
        path = ox.save_onnx(self.build(recipe), self.stage / f"repair-{self.precision}-{self._n}.onnx")
        f = self.gate_file(path)
        return attempt_of(recipe.label(), recipe.describe(), f, time.perf_counter() - t0), path

    def gate_file(self, path: Path) -> ExportedFile:
        cand = gate.onnx_cpu_outputs(path, self.reference.inputs)
        return gate.gate_file(path, "onnx", self.precision, self.reference, cand, self.classes, self.gates,
                              decision=self.decision)

    def run(self, failed: ExportedFile, first_recipe: Any, config: RepairConfig,
            seconds: float | None = None) -> tuple[RepairResult, ExportedFile]:
        """Search from ``failed`` for at most ``seconds`` (None: no limit); returns the result and
        the file to keep (the repaired one, with its cost in its card, or ``failed`` unchanged)."""
        t0 = time.perf_counter()
        limit = f", {seconds:.0f} s" if seconds is not None else ""
        self.log(f"{failed.path.name} fails its gate: searching for the cheapest repair "
                 f"(at most {config.max_checks} checks{limit}) ...")
        first = attempt_of(first_recipe.label(), first_recipe.describe(), failed, 0.0)
        deadline = None if seconds is None else time.perf_counter() + seconds
        search = Search(self.check, config.max_checks, self.log, (first, failed.path), deadline)
        speeds: dict[str, dict[str, Any]] = {}

        def speed(a: Attempt) -> float:  # measured once per file; the chosen one's is recorded
            path = search.file_of(a)
            if str(path) not in speeds:
                speeds[str(path)] = measure_throughput({"unrepaired": failed.path, "repaired": path},
                                                       self.reference.inputs.x, config)
            return speeds[str(path)]["ratio"] or 0.0

        result = choose(search, self.precision, first_recipe, self.rank, config, speed)
        if result.path is None:
            self.log(f"no repair of {failed.path.name} passed: tried {len(result.attempts) - 1} candidate(s)"
                     + (f" ({result.stopped})" if result.stopped else ""))
            return result, failed
        result.throughput = speeds.get(str(result.path)) or measure_throughput(
            {"unrepaired": failed.path, "repaired": result.path}, self.reference.inputs.x, config)
        self.log(f"repaired: {result.chosen.label}; throughput {result.throughput['ratio']:.0%} of the "
                 f"unrepaired file's at batch {config.throughput_batch}")
        result.seconds = time.perf_counter() - t0  # the search and the throughput measurement
        _record_in_card(result)
        return result, self.gate_file(result.path)


def _record_in_card(result: RepairResult) -> None:
    """The card of the repaired file says how it was made and what that cost."""
    import onnx

    proto = onnx.load(str(result.path))
    card = ox.read_card(proto, str(result.path))
    ox.set_card(proto, card.with_(extra={**card.extra, "repair": result.card_record()}))
    ox.check_onnx(proto, result.path.name)
    ox.save_onnx(proto, result.path)


def measure_throughput(paths: dict[str, Path], images: np.ndarray, config: RepairConfig) -> dict[str, Any]:
    """Images/s of each file on onnxruntime CPU at ``throughput_batch``, best of interleaved
    rounds (a shared machine drifts; the better round is the one less disturbed)."""
    from bonedeploy.backends.base import open_backend
    from bonedeploy.bench.timing import measure

    bs = config.throughput_batch
    x = np.ascontiguousarray(np.resize(images, (bs, *images.shape[1:])), dtype=np.float32)
    best: dict[str, float] = {k: 0.0 for k in paths}
    backends = {k: open_backend(p, "onnxruntime", provider="cpu").load() for k, p in paths.items()}
    try:
        for _ in range(config.throughput_rounds):
            for k, b in backends.items():
                stats = measure(lambda b=b: b.infer(x), bs, warmup_s=0.3, duration_s=config.throughput_s,
                                min_iterations=3)
                best[k] = max(best[k], stats.images_per_s)
    finally:
        for b in backends.values():
            b.close()
    ratio = best["repaired"] / best["unrepaired"] if best["unrepaired"] else None
    return {"batch": bs, "runtime": "onnxruntime CPU", "images_per_s": {k: round(v, 2) for k, v in best.items()},
            "ratio": ratio}


def repairer_for(precision: str, staged: dict[str, Path], cards: dict[str, Any], calib, reference: Reference,
                 gates, stage: Path, log: Log, int8_builder: Callable) -> tuple[Repairer, Any]:
    """The repairer of ``precision`` for this export, and the recipe of the file that failed."""
    from bonedeploy.eval.decision import rule_for
    from bonedeploy.export import precision as prec
    from bonedeploy.export import sensitivity
    from bonedeploy.export.layermap import CARD_KEY
    from bonedeploy.export.repair import Fp16Recipe

    card = cards["fp32"]
    layers = {e["tensor"]: e["module"] for e in card.extra.get(CARD_KEY) or []}
    x = reference.inputs.x
    if precision == "int8":
        builder = int8_builder(staged, cards, calib, stage)

        def rank_int8(base: Any) -> list[dict]:
            path = staged["int8"]
            if base != prec.QuantOptions():
                path = ox.save_onnx(builder.build(base), stage / "rank-int8.onnx")
            return sensitivity.rank_int8(path, builder.pre_path, x, layers)

        return Repairer("int8", builder.build, rank_int8, reference, card.classes, gates, rule_for(card),
                        stage, log), prec.QuantOptions()

    def build_fp16(recipe: Fp16Recipe) -> Any:
        import onnx

        return prec.to_fp16(onnx.load(str(staged["fp32"])), card, recipe.float_nodes)

    return Repairer("fp16", build_fp16, lambda _base: sensitivity.rank_fp16(staged["fp32"], x, layers),
                    reference, card.classes, gates, rule_for(card), stage, log), Fp16Recipe()
