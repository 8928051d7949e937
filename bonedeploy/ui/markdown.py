"""Markdown pipe tables: the one writer behind every report's tables (bench, training, calibration,
demo), so a cell can never break its table. No rich import: reports are written on the edge path.

A cell's ``|`` is escaped and its line breaks are joined into one line (a multi-line error message
in a status cell would otherwise end the table there); ``ui.tables.markdown_table`` reads them back.
"""

from __future__ import annotations

from typing import Any, Iterable, Sequence

ALIGN = {"l": "---", "r": "---:", "c": ":---:"}


def pipe_table(header: Sequence[Any], rows: Iterable[Sequence[Any]], align: str = "") -> str:
    """The table as lines joined by newlines (no trailing newline). ``align``: one letter per column,
    ``l`` (the default for columns it does not cover), ``r`` or ``c``."""
    width = len(header)
    if len(align) > width or set(align) - set(ALIGN):
        raise ValueError(f"align {align!r}: at most {width} of {', '.join(ALIGN)}")
    lines = [_row(header), "|" + "|".join(ALIGN[a] for a in align.ljust(width, "l")) + "|"]
    for i, row in enumerate(rows):
        if len(row) != width:
            raise ValueError(f"row {i} has {len(row)} cells; the header has {width}")
        lines.append(_row(row))
    return "\n".join(lines)


def cell(value: Any) -> str:
    """One line, its pipes escaped."""
    text = " ".join(line.strip() for line in str(value).splitlines()) if value is not None else ""
    return text.replace("|", "\\|")


def _row(cells: Sequence[Any]) -> str:
    return "|" + "|".join(f" {c} " if c else " " for c in map(cell, cells)) + "|"
