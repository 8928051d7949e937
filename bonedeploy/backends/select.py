"""The runtime chosen by measurement: ``<artefact>.runtime.json`` and ``--backend auto``.

``bonedeploy bench --select`` writes, beside each artefact it measured under more than one
runtime, the fastest backend that passed its parity gate and the numbers that made it win.
``infer --backend auto`` (the default) runs that backend when the record is present, was measured
on this kind of machine and names this very file (its sha256); otherwise the artefact's default
backend (onnxruntime for ``.onnx``), with a note saying why. Nothing is chosen without a
measurement behind it.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bonedeploy.errors import ConfigError

AUTO = "auto"
FORMAT = "bonedeploy.runtime/1"
SUFFIX = ".runtime.json"
# Which backends can run a file, by suffix (the first is the default without a record).
CANDIDATES: dict[str, tuple[str, ...]] = {".onnx": ("onnxruntime", "openvino"), ".xml": ("openvino",)}
CRITERION = ("geometric mean of compute-mode images/s over the measured batch sizes, among the "
             "rows that ran and passed their parity gate")


def record_path(artefact: str | Path) -> Path:
    artefact = Path(artefact)
    return artefact.with_name(artefact.name + SUFFIX)


def candidates(path: str | Path) -> tuple[str, ...]:
    return CANDIDATES.get(Path(path).suffix.lower(), ())


@dataclass(frozen=True)
class Choice:
    """The backend ``--backend`` resolved to, and how (printed, and kept in the run record)."""

    backend: str | None  # None: by suffix (the registry's choice)
    how: str
    options: dict[str, Any] = field(default_factory=dict)
    warning: str | None = None

    def to_dict(self) -> dict[str, Any]:
        d = {"requested": AUTO if self.how != "requested" else self.backend, "backend": self.backend,
             "how": self.how, "options": dict(self.options)}
        if self.warning:
            d["warning"] = self.warning
        return d


def resolve(engine: str | Path, requested: str | None, sha256: str | None = None,
            machine: str | None = None) -> Choice:
    """``requested`` as given, or for ``auto``/None the recorded choice when it is valid here."""
    if requested and requested != AUTO:
        return Choice(requested, "requested")
    record = record_path(engine)
    if not record.is_file():
        default = (candidates(engine) or (None,))[0]
        return Choice(default, "default for the suffix (no runtime record; `bonedeploy bench "
                      "--select` makes one)" if default else "by suffix")
    why = _invalid(record, engine, sha256, machine)
    default = (candidates(engine) or (None,))[0]
    if isinstance(why, str):
        return Choice(default, "default for the suffix", warning=f"{record}: ignored, {why}")
    rec = why
    return Choice(rec["backend"], f"{record.name} (measured {rec.get('created', '?')} on "
                  f"{rec.get('machine', {}).get('slug', '?')})", dict(rec.get("options") or {}))


def _invalid(record: Path, engine: str | Path, sha256: str | None, machine: str | None):
    """The record when it can be trusted for this file on this machine; else why not."""
    try:
        rec = json.loads(record.read_text())
    except (OSError, ValueError) as e:
        return f"unreadable ({e})"
    if not isinstance(rec, dict) or rec.get("format") != FORMAT or not rec.get("backend"):
        return "not a bonedeploy runtime record"
    if rec["backend"] not in candidates(engine):
        return f"backend {rec['backend']!r} cannot run {Path(engine).suffix} files"
    if sha256 is None:
        from bonedeploy.backends.modelcache import artefact_sha256

        sha256 = artefact_sha256(engine)
    if rec.get("sha256") != sha256:
        return (f"it was measured on another file (sha256 {str(rec.get('sha256'))[:12]}… != "
                f"{sha256[:12]}…): the artefact changed; rerun `bonedeploy bench --select`")
    if machine is None:
        from bonedeploy.util.machine import machine_slug

        machine = machine_slug()
    measured_on = (rec.get("machine") or {}).get("slug")
    if measured_on != machine:
        return f"it was measured on {measured_on}, this is {machine}; rerun `bonedeploy bench --select` here"
    return rec


# --- making the record (from a bench report's rows) --------------------------------------------

def score(row: dict[str, Any]) -> float | None:
    """Geometric mean of compute images/s over the batch sizes (None: no numbers)."""
    per = (row.get("timings") or {}).get("compute") or {}
    rates = [s["images_per_s"] for s in per.values() if s.get("images_per_s")]
    if not rates:
        return None
    return math.exp(sum(math.log(r) for r in rates) / len(rates))


def choose(rows: list[dict[str, Any]]) -> tuple[dict[str, Any] | None, list[dict[str, Any]]]:
    """The winning row among those that ran with status ok (parity passed), and a summary of all."""
    summary, best = [], None
    for r in rows:
        s = score(r) if r.get("status") == "ok" else None
        per = ((r.get("timings") or {}).get("compute") or {})
        summary.append({"backend": r["backend"], "label": r["label"], "status": r["status"],
                        "reason": r.get("reason"), "score_images_per_s": s,
                        "parity": _parity_brief(r.get("parity")),
                        "images_per_s": {bs: v["images_per_s"] for bs, v in per.items()},
                        "p50_ms": {bs: v["p50_ms"] for bs, v in per.items()},
                        "options": (r.get("options") or {})})
        if s is not None and (best is None or s > score(best)):
            best = r
    return best, summary


def _parity_brief(p: dict[str, Any] | None) -> dict[str, Any] | None:
    if not p:
        return None
    keys = ("top1_agreement", "max_abs_dprob", "reference", "gate")
    return {k: p[k] for k in keys if k in p}


def write_records(report: dict[str, Any]) -> list[Path]:
    """One ``<artefact>.runtime.json`` per artefact measured by more than one runtime."""
    from bonedeploy.backends.modelcache import artefact_sha256
    from bonedeploy.util.fs import write_json
    from bonedeploy.util.machine import machine_slug

    by_file: dict[str, list[dict[str, Any]]] = {}
    for r in report["results"]:
        if r["backend"] in candidates(r["path"]):
            by_file.setdefault(str(Path(r["path"]).resolve()), []).append(r)
    written = []
    for path, rows in by_file.items():
        if len({r["backend"] for r in rows}) < 2 or not Path(path).is_file():
            continue
        best, summary = choose(rows)
        if best is None:
            continue
        m = report.get("machine") or {}
        write_json(record_path(path), {
            "format": FORMAT, "artefact": Path(path).name, "sha256": artefact_sha256(path),
            "backend": best["backend"], "options": best.get("options") or {},
            "criterion": CRITERION, "created": report.get("created"), "command": report.get("command"),
            "machine": {"slug": machine_slug(m), "cpu": m.get("cpu"), "cores": m.get("cores")},
            "isolation": next((n for n in report.get("notes", []) if "own process" in n), None),
            "candidates": summary})
        written.append(record_path(path))
    return written


def check_requested(name: str) -> str:
    """``--backend``: auto or a registered backend (the error lists them)."""
    if name == AUTO:
        return name
    from bonedeploy.backends.base import get_backend

    try:
        get_backend(name)
    except ConfigError as e:
        raise ConfigError(f"{e}, or {AUTO}") from e
    return name
