"""Everything a benchmark result is rendered to, from its JSON-able dict alone (a saved JSON can
be re-rendered anywhere without measuring again): ``report`` (terminal table, Markdown) and
``plot`` (PNG, matplotlib: the ``[report]`` extra)."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def write_outputs(d: dict[str, Any], json_path: str | Path | None = None,
                  md_path: str | Path | None = None, plot_path: str | Path | None = None) -> list[Path]:
    """Write the requested files; returns their paths."""
    from bonedeploy.bench.render.report import to_markdown
    from bonedeploy.util.fs import write_json, write_text

    written = []
    if json_path:
        write_json(json_path, d)
        written.append(Path(json_path))
    if md_path:
        write_text(md_path, to_markdown(d))
        written.append(Path(md_path))
    if plot_path:
        from bonedeploy.bench.render.plot import plot_report

        plot_report(d, plot_path)
        written.append(Path(plot_path))
    return written
