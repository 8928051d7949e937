"""Render a benchmark result (the JSON-able dict of ``BenchReport.to_dict()``): a rich table for
the terminal, Markdown, JSON and a PNG plot. Everything works from the dict alone, so a saved
JSON can be re-rendered anywhere without measuring again (the PNG is drawn by
``bonedeploy.bench.render.plot``)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from rich.markup import escape
from rich.table import Table

from bonedeploy.eval.parity import ood_summary


MODE_TITLES = {"compute": "compute only (preprocessed batch in memory)",
               "e2e": "end to end (files on disk → decode → preprocess → infer)"}


# --- numbers every renderer shares -----------------------------------------------------------
def timing(r: dict[str, Any], mode: str, bs: int) -> dict[str, Any] | None:
    return (r.get("timings") or {}).get(mode, {}).get(str(bs))


def reference(d: dict[str, Any]) -> dict[str, Any] | None:
    return next((r for r in d["results"] if r["key"] == d.get("reference")), None)


def speedup(d: dict[str, Any], r: dict[str, Any], mode: str, bs: int) -> float | None:
    """Throughput of ``r`` over the reference's, same mode and batch size, same run."""
    ref = reference(d)
    a, b = timing(r, mode, bs), ref and timing(ref, mode, bs)
    if not a or not b or not b["images_per_s"]:
        return None
    return a["images_per_s"] / b["images_per_s"]


def modes(d: dict[str, Any]) -> list[str]:
    return [m for m in ("compute", "e2e") if any(m in (r.get("timings") or {}) for r in d["results"])]


def _f(v: float | None, fmt: str = ".3f", none: str = "–") -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return none
    return format(v, fmt)


def _pp(v: float | None) -> str:  # a difference of proportions, in percentage points
    return "–" if v is None else f"{v * 100:+.1f} pp"


def _ms(v: float | None) -> str:
    return "–" if v is None else (f"{v:.3f}" if v < 1 else f"{v:.2f}" if v < 100 else f"{v:.0f}")


def parity_cells(r: dict[str, Any]) -> dict[str, str]:
    p = r.get("parity") or {}
    agree = p.get("top1_agreement")
    return {
        "acc": _f(p.get("accuracy_cand")), "dacc": _pp(p.get("accuracy_delta")) if p else "–",
        "agree": "–" if agree is None else f"{agree:.1%}",
        "dprob": _f(p.get("max_abs_dprob"), ".1e"),
        "flips": str(len(p["flips"])) if "flips" in p else "–",
        "sens": _f(p.get("sensitivity_cand")), "spec": _f(p.get("specificity_cand")),
    }


def cold_start_s(r: dict[str, Any]) -> float | None:
    """Median seconds from process start to the first prediction (``bench.coldstart``)."""
    return (r.get("cold_start") or {}).get("median_s")


def warnings(d: dict[str, Any]) -> list[str]:
    out = [f"{r['label']}: cold start failed: {r['cold_start']['error']}" for r in d["results"]
           if (r.get("cold_start") or {}).get("error")]
    for r in d["results"]:
        for m, per in (r.get("timings") or {}).items():
            out += [f"{r['label']} {m} batch {bs}: {t['warning']}" for bs, t in per.items()
                    if t.get("warning")]
    return out


def hardware_line(d: dict[str, Any]) -> str:
    m = d["machine"]
    gpu = m.get("gpu")
    where = f"{m.get('cpu')} ({m.get('cores')} cores)" + (
        f" + {gpu['name']} (driver {gpu['driver']})" if gpu else ", no GPU")
    return (f"Every measured row ran on {where}. Rows marked missing/unavailable were NOT measured "
            "here; TensorRT rows need a machine with TensorRT and an NVIDIA GPU.")


# --- terminal ------------------------------------------------------------------------------
STATUS_SHORT = {"ok": "✅ ok", "gate failed": "❌ gate", "error": "❌ error",
                "incompatible": "❎ incompat.", "unavailable": "❎ n/a", "missing": "❎ missing"}


def rich_table(d: dict[str, Any], mode: str = "compute", parity: bool = True, width: int = 200) -> Table:
    """Ultralytics-style: one row per artefact, status, size, accuracy and agreement with the
    reference, then p50 latency and throughput (× the reference) per batch size. At ``width``
    the artefact and its status print whole; parity columns, then the largest batches, go first."""
    from rich import box

    from bonedeploy.ui.tables import KEY, Col, fit_table

    bss = d["config"]["batch_sizes"]
    ref = reference(d)
    cols = [Col("artefact", KEY, "left"), Col("status", KEY, "left")]
    cold = parity and any(cold_start_s(r) is not None for r in d["results"])
    cols += [Col(h, p) for h, p in (("MB", 1), ("acc", 3), ("Δacc pp", 2), ("agree", 4), ("max|Δp|", 0))
             if parity or h == "MB"]
    cols += [Col("start s", 5)] * cold
    cols += [Col(f"batch {bs}", 100 - i) for i, bs in enumerate(bss)]
    rows = []
    for r in d["results"]:
        pc = parity_cells(r)
        dacc = (r.get("parity") or {}).get("accuracy_delta")
        acc = [pc["acc"], "–" if dacc is None else f"{dacc * 100:+.1f}", pc["agree"], pc["dprob"]]
        rows.append([escape(r["label"]), STATUS_SHORT.get(r["status"], r["status"]), _f(r.get("size_mb"), ".1f"),
                     *(acc if parity else []), *[_f(cold_start_s(r), ".2f")] * cold,
                     *(_cell(d, r, mode, bs) for bs in bss)])
    return fit_table(cols, rows, width, title=f"bonedeploy bench — {MODE_TITLES[mode]}", box=box.SIMPLE_HEAD,
                     caption=f"reference: {ref['label'] if ref else 'none'}; "
                             + ("start s: process start → first prediction of `bonedeploy infer` on one "
                                "image (median); " if cold else "")
                             + "per batch: p50 ms, images/s (× reference)", caption_justify="left")


def _cell(d: dict[str, Any], r: dict[str, Any], mode: str, bs: int) -> str:
    tm = timing(r, mode, bs)
    if not tm:
        return "–"
    x = speedup(d, r, mode, bs)
    warn = " [yellow]⚠[/]" if tm.get("warning") else ""
    ratio = f" {x:.2f}×" if x is not None else ""
    return f"{_ms(tm['p50_ms'])} ms{warn}\n{_rate(tm['images_per_s'])}/s{ratio}"


def _rate(v: float) -> str:
    return f"{v:,.0f}" if v >= 100 else f"{v:.1f}"


def print_report(d: dict[str, Any], console) -> None:
    for i, mode in enumerate(modes(d) or ["compute"]):
        console.print(rich_table(d, mode, parity=i == 0, width=console.width))
    for r in d["results"]:
        if r["status"] != "ok" and r.get("reason"):
            console.print(f"[bold]{r['label']}[/]: {r['status']}: {r['reason']}", highlight=False)
        flips = (r.get("parity") or {}).get("flips") or []
        if flips and r["key"] != d.get("reference"):
            names = ", ".join(_flip_name(f, full=False) for f in flips[:5])
            console.print(f"{r['label']}: {len(flips)} label flip(s) vs reference: {names}"
                          + (" …" if len(flips) > 5 else ""), highlight=False)
        if r["key"] != d.get("reference") and (line := ood_summary(r["label"], r.get("parity") or {})):
            console.print(escape(line), highlight=False)
    for w in warnings(d):
        console.print(f"[yellow]warning:[/] {w}", highlight=False)
    for n in d.get("notes") or []:
        console.print(f"[dim]note: {n}[/]", highlight=False)
    console.print(f"[dim]{hardware_line(d)}[/]", highlight=False)


# --- markdown --------------------------------------------------------------------------------
def _md_table(header: list[str], rows: list[list[str]]) -> str:
    """Names left, figures right."""
    from bonedeploy.ui.markdown import pipe_table

    return pipe_table(header, rows, "l" + "r" * (len(header) - 1))


def _flip_name(f: Any, full: bool = True) -> str:
    if not isinstance(f, dict):
        return str(f)
    name = str(f.get("path")) if full else Path(str(f.get("path"))).name
    if not full:
        return name
    near = " (near the boundary)" if f.get("near_boundary") else ""
    prob = f.get("ref_prob", 0.0)
    return f"`{name}` {f.get('ref_class')} → {f.get('cand_class')} (ref p {prob:.3f}){near}"


def _md_speed(d: dict[str, Any], r: dict[str, Any], mode: str, bs: int) -> str:
    t = timing(r, mode, bs)
    if not t:
        return "–"
    x = speedup(d, r, mode, bs)
    ratio = f" · {x:.2f}×" if x is not None else ""
    return f"{_ms(t['p50_ms'])} ms · {_rate(t['images_per_s'])}/s{ratio}" + (" ⚠" if t.get("warning") else "")


def _runs_on(r: dict[str, Any]) -> str:
    desc = r.get("describe") or {}
    where = desc.get("providers") or desc.get("gpu") or desc.get("device") or "–"
    return ", ".join(where) if isinstance(where, list) else str(where)


def _cold_cell(r: dict[str, Any]) -> str:
    c = r.get("cold_start") or {}
    if c.get("error"):
        return "failed"
    if c.get("median_s") is None:
        return "–"
    return f"{c['median_s']:.2f} ({c['min_s']:.2f}–{c['max_s']:.2f}, n = {c['runs']})"


def to_markdown(d: dict[str, Any]) -> str:
    m, cfg = d["machine"], d["config"]
    ref = reference(d)
    v = m.get("versions") or {}
    lines = [
        "# bonedeploy bench", "",
        f"- command: `{d.get('command') or 'bonedeploy bench'}`",
        f"- date: {d['created']}; bonedeploy {v.get('bonedeploy')}, git {m.get('git_commit')}",
        f"- machine: {m.get('cpu')}, {m.get('cores')} cores; GPU: "
        + (f"{m['gpu']['name']} (driver {m['gpu']['driver']})" if m.get("gpu") else "none"),
        "- versions: " + ", ".join(f"{k} {val}" for k, val in v.items() if val and k != "bonedeploy"),
        f"- timing: warm-up {cfg['warmup_s']} s, then ≥ {cfg['duration_s']} s and ≥ "
        f"{cfg['min_iterations']} iterations per batch size; latency is per batch, wall clock after "
        "the backend's synchronize()",
        f"- parity set: {d['data'].get('kind', '–')}, n = {d['data'].get('n', '–')}"
        + (f" ({d['data']['root']})" if d["data"].get("root") else "")
        + f"; reference: {ref['label'] if ref else 'none'}",
        "", f"> {hardware_line(d)}", "",
    ]
    first = (modes(d) or ["compute"])[0]
    lines += [f"## Summary ({first}: p50 ms per batch · images/s · × reference)", "", _md_table(
        ["artefact", "status", "size MB", "accuracy", "Δacc", "sens", "spec", "agreement",
         "max abs Δprob", "flips", *[f"batch {bs}" for bs in cfg["batch_sizes"]]],
        [[r["label"], r["status"], _f(r.get("size_mb"), ".1f"),
          *(lambda c: [c["acc"], c["dacc"], c["sens"], c["spec"], c["agree"], c["dprob"],
                       c["flips"]])(parity_cells(r)),
          *[_md_speed(d, r, first, bs) for bs in cfg["batch_sizes"]]]
         for r in d["results"]]), ""]
    lines += ["## Load time, cold start and memory", "",
              "Cold start: process start → the first prediction row of `bonedeploy infer` on one "
              "image, median (min–max) of the timed starts after one untimed start, each row's "
              "starts with nothing else running; its peak RSS is that process's.", "", _md_table(
        ["artefact", "backend", "precision", "load s", "first call s", "cold start s", "first start s",
         "cold-start RSS MB", "peak RSS MB", "RSS added MB", "peak GPU MB", "runs on"],
        [[r["label"], r["backend"], str(r.get("precision")), _f(r.get("load_s"), ".2f"),
          _f(r.get("first_call_s"), ".2f"), _cold_cell(r),
          _f((r.get("cold_start") or {}).get("first_run_s"), ".2f"),
          _f((r.get("cold_start") or {}).get("peak_rss_mb"), ".0f"),
          _f(r.get("peak_rss_mb"), ".0f"), _f(r.get("rss_added_mb"), ".0f"),
          _f(r.get("peak_gpu_mb"), ".0f"), _runs_on(r)]
         for r in d["results"] if r["status"] in ("ok", "gate failed")]), ""]
    for mode in modes(d):
        lines += [f"## Latency and throughput: {MODE_TITLES[mode]}", "", _md_table(
            ["artefact", "batch", "iters", "mean ms", "p50", "p90", "p95", "p99", "min", "CV",
             "images/s", "× ref"],
            [[r["label"], str(bs), str(t["iterations"]), _ms(t["mean_ms"]), _ms(t["p50_ms"]),
              _ms(t["p90_ms"]), _ms(t["p95_ms"]), _ms(t["p99_ms"]), _ms(t["min_ms"]),
              f"{t['cv']:.1%}" + (" ⚠" if t.get("warning") else ""), f"{t['images_per_s']:,.1f}",
              _f(speedup(d, r, mode, bs), ".2f")]
             for r in d["results"] for bs in cfg["batch_sizes"] if (t := timing(r, mode, bs))]), ""]
    skipped = [r for r in d["results"] if r["status"] != "ok"]
    if skipped:
        lines += ["## Not measured / failed", ""]
        lines += [f"- **{r['label']}** ({r['path']}): {r['status']}: {r.get('reason')}" for r in skipped]
        lines.append("")
    flips = [(r, (r.get("parity") or {}).get("flips") or []) for r in d["results"]]
    if any(f for _, f in flips):
        lines += ["## Label flips vs the reference", ""]
        lines += [f"- {r['label']}: " + ", ".join(_flip_name(x) for x in f) for r, f in flips if f]
        lines.append("")
    ood = [line for r in d["results"] if r["key"] != d.get("reference")
           and (line := ood_summary(r["label"], r.get("parity") or {}))]
    if ood:
        lines += ["## Out-of-distribution decisions vs the reference", "", *[f"- {x}" for x in ood], ""]
    extra = warnings(d) + list(d.get("notes") or [])
    if extra:
        lines += ["## Warnings and notes", "", *[f"- {w}" for w in extra], ""]
    return "\n".join(lines)
