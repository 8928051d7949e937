"""The benchmark figure: latency vs batch size per artefact, throughput bars, and accuracy
deltas beside top-1 agreement, so speed and clinical agreement are read side by side."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from bonedeploy.util.fs import atomic_path
from bonedeploy.bench.render.report import hardware_line, modes, speedup, timing


def _measured(d: dict[str, Any]) -> list[dict[str, Any]]:
    return [r for r in d["results"] if r.get("timings")]


def plot_report(d: dict[str, Any], path: str | Path) -> Path:
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    rows = _measured(d)
    bss = d["config"]["batch_sizes"]
    fig, axes = plt.subplots(1, 3, figsize=(17, 5.6), gridspec_kw={"width_ratios": [1.1, 1.3, 1]})
    colors = {r["key"]: plt.cm.tab10(i % 10) for i, r in enumerate(rows)}
    _latency(axes[0], d, rows, bss, colors)
    _throughput(axes[1], d, rows, bss, colors)
    _accuracy(axes[2], d, colors)
    m = d["machine"]
    gpu = f" + {m['gpu']['name']}" if m.get("gpu") else ""
    fig.suptitle(f"bonedeploy bench — {m.get('cpu')} ({m.get('cores')} cores){gpu} — {d['created']}",
                 fontsize=11)
    fig.text(0.5, 0.005, hardware_line(d), ha="center", fontsize=8, color="0.35")
    fig.tight_layout(rect=(0, 0.03, 1, 0.96))
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, format=path.suffix.lstrip(".") or "png")
    plt.close(fig)
    return path


def _latency(ax, d, rows, bss, colors) -> None:
    styles = {"compute": "-", "e2e": "--"}
    for r in rows:
        for mode in modes(d):
            pts = [(bs, timing(r, mode, bs)) for bs in bss if timing(r, mode, bs)]
            if not pts:
                continue
            x = [bs for bs, _ in pts]
            p50 = np.array([t["p50_ms"] for _, t in pts])
            p90 = np.array([t["p90_ms"] for _, t in pts])
            ax.errorbar(x, p50, yerr=np.vstack([np.zeros_like(p50), p90 - p50]), marker="o", ms=4, capsize=3,
                        ls=styles[mode], color=colors[r["key"]],
                        label=r["label"] + (" (e2e)" if mode == "e2e" else ""))
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xticks(bss, [str(b) for b in bss])
    ax.set_xlabel("batch size")
    ax.set_ylabel("latency per batch, ms (p50, bar to p90)")
    ax.set_title("Latency vs batch size")
    ax.grid(True, which="both", alpha=0.3)
    if rows:
        ax.legend(fontsize=7, loc="upper left")


def _throughput(ax, d, rows, bss, colors) -> None:
    """Compute-only images/s per batch size, each bar labelled with its × reference."""
    width = 0.8 / max(1, len(rows))
    for i, r in enumerate(rows):
        vals = [(timing(r, "compute", bs) or {}).get("images_per_s", 0.0) for bs in bss]
        xs = np.arange(len(bss)) + (i - (len(rows) - 1) / 2) * width
        bars = ax.bar(xs, vals, width, color=colors[r["key"]], label=r["label"])
        for b, v, bs in zip(bars, vals, bss):
            if not v:
                continue
            x = speedup(d, r, "compute", bs)
            txt = (f"{v:,.0f}" if v >= 10 else f"{v:.1f}") + (f" ({x:.2f}×)" if x is not None else "")
            ax.annotate(txt, (b.get_x() + b.get_width() / 2, v), ha="center", va="bottom",
                        fontsize=6, rotation=90, xytext=(0, 2), textcoords="offset points")
    ax.set_xticks(np.arange(len(bss)), [f"batch {b}" for b in bss])
    ax.set_ylabel("images/s (compute only)")
    ax.set_title("Throughput (× reference in the same run)")
    ax.margins(y=0.3)
    ax.grid(True, axis="y", alpha=0.3)
    if rows:
        ax.legend(fontsize=7, loc="upper left")


def _accuracy(ax, d, colors) -> None:
    from matplotlib.transforms import blended_transform_factory

    rows = [r for r in d["results"] if r.get("parity")]
    if not rows:
        ax.text(0.5, 0.5, "no parity measured", ha="center", va="center", transform=ax.transAxes)
        ax.set_axis_off()
        return
    y = np.arange(len(rows))
    deltas = [100 * ((r["parity"].get("accuracy_delta") or 0.0)) for r in rows]
    cols = [colors.get(r["key"], "0.5") for r in rows]
    ax.barh(y, deltas, color=cols, height=0.5)
    ax.scatter(deltas, y, color=cols, edgecolor="0.1", zorder=3, s=30)  # visible at exactly 0
    span = max(1.0, max(abs(v) for v in deltas))
    ax.set_xlim(-span * 1.3, span * 1.3)
    ax.set_ylim(len(rows) - 0.35, -0.5)  # top to bottom, room for the caption under each bar
    ax.axvline(0, color="0.2", lw=0.8)
    text_x = blended_transform_factory(ax.transAxes, ax.transData)
    for yi, r, v in zip(y, rows, deltas):
        p = r["parity"]
        acc, agree = p.get("accuracy_cand"), p.get("top1_agreement")
        txt = (f"acc {acc:.3f} ({v:+.1f} pp)" if acc is not None else "unlabelled") + (
            f", agree {agree:.1%}" if agree is not None else "")
        if r["key"] == d.get("reference"):
            txt += " (reference)"
        elif p.get("flips"):
            txt += f", {len(p['flips'])} flip(s)"
        if r["status"] == "gate failed":
            txt += "  GATE FAILED"
        ax.text(0.02, yi + 0.4, txt, transform=text_x, ha="left", va="center", fontsize=7,
                color="red" if r["status"] == "gate failed" else "0.1")
    ax.set_yticks(y, [r["label"] for r in rows], fontsize=8)
    ax.set_xlabel("Δ accuracy vs reference, percentage points")
    n = d.get("data", {}).get("n")
    ax.set_title(f"Accuracy delta and top-1 agreement (n={n})")
    ax.grid(True, axis="x", alpha=0.3)
