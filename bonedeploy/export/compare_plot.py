"""The figure of ``bonedeploy compare``: accumulated and local SQNR against depth, the tolerance
line, and the first layer below it. matplotlib is imported here only (the ``report`` extra)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from bonedeploy.util.fs import atomic_path

_TOP_DB = 120.0  # where "no error at all" is drawn (SQNR of an identical tensor is infinite)
_BOTTOM_DB = -20.0  # where an overflow (-inf) is drawn


def _db(v: Any) -> float | None:
    if v is None:
        return _TOP_DB
    if isinstance(v, str):  # "-inf" after JSON cleaning
        return _BOTTOM_DB
    return max(_BOTTOM_DB, min(_TOP_DB, float(v)))


def plot_layers(report: dict[str, Any], path: Path) -> Path | None:
    """``None`` when matplotlib is not installed (the JSON and table hold the same numbers)."""
    try:
        import matplotlib

        matplotlib.use("Agg", force=False)
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    rows = report["layers"]
    x = list(range(len(rows)))
    fig, ax = plt.subplots(figsize=(max(7.0, 0.45 * len(rows) + 2) + 2.5, 4.8))
    ax.plot(x, [_db(r["sqnr_db"]) for r in rows], "o-", label="accumulated (candidate vs reference)")
    local = [(i, _db(r["local_sqnr_db"])) for i, r in enumerate(rows) if r.get("local_source")]
    if local:
        ax.plot(*zip(*local), "s", mfc="none", label=f"local ({rows[local[0][0]]['local_source']})")
        chan = [(i, _db(rows[i].get("local_channel_sqnr_db"))) for i, _ in local]
        ax.plot(*zip(*chan), "v", color="tab:purple", mfc="none", label="local, mean over channels")
    tol = report["tolerance_db"]
    ax.axhline(tol, color="tab:red", ls="--", lw=1, label=f"tolerance {tol:g} dB")
    first = report.get("first_crossing")
    if first:
        ax.axvline(first["index"], color="tab:red", lw=1, alpha=0.4)
        ax.annotate(f"first below: {first['layer']}", (first["index"], tol), xytext=(4, 6),
                    textcoords="offset points", color="tab:red", fontsize=8)
    ax.set_xticks(x, [f"{r['layer']} ({r['kind']})" for r in rows], rotation=60, ha="right", fontsize=7)
    ax.set_ylabel(f"SQNR (dB, higher is closer; no error at {_TOP_DB:g})")
    ref, cand = Path(report["reference"]["path"]).name, Path(report["candidate"]["path"]).name
    ax.set_title(f"{cand} against {ref}: error by depth ({report['images']['n']} images)", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))  # outside: never over a point
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)
    return path
