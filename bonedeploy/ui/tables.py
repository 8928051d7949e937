"""Terminal tables whose key columns print whole at any width (an 80-column terminal included).

Key columns hold what a user copies into the next command (model and file names) or acts on
(verdicts): they are never cut with "…" nor dropped. When the table is wider than the terminal,
secondary columns are dropped, lowest priority first, and the caption names them.
"""

from __future__ import annotations

import io
import re
from dataclasses import dataclass
from typing import Any, Sequence

from rich.console import Console
from rich.measure import Measurement
from rich.table import Table
from rich.text import Text

KEY = 1_000_000  # priority of a column that is never dropped


@dataclass(frozen=True)
class Col:
    header: str
    priority: int = 0  # lower is dropped first; KEY never
    justify: str = "right"
    wrap: bool = False  # free text: may wrap at spaces (else one line, folded only if it must)

    @property
    def key(self) -> bool:
        return self.priority >= KEY


def fit_table(cols: Sequence[Col], rows: Sequence[Sequence[Any]], width: int, caption: str | None = None,
              **table_kwargs: Any) -> Table:
    """A rich Table of ``rows`` that fits ``width`` columns, dropping secondary columns if needed."""
    keep = list(range(len(cols)))
    while True:
        dropped = [c.header for i, c in enumerate(cols) if i not in keep]
        note = f"not shown at {width} columns: {', '.join(dropped)}" if dropped else None
        table = _build(cols, rows, keep, "; ".join(filter(None, [caption, note])) or None, table_kwargs)
        droppable = [i for i in keep if not cols[i].key]
        if min_width(table) <= width or not droppable:
            return table
        keep.remove(min(droppable, key=lambda i: (cols[i].priority, -i)))


def min_width(table: Table) -> int:
    console = Console(width=10_000, file=io.StringIO())
    return Measurement.get(console, console.options, table).minimum


def _cell_width(cell: Any) -> int:
    if not isinstance(cell, str):
        return 1
    return max(Text.from_markup(line).cell_len for line in cell.split("\n"))


def _build(cols, rows, keep, caption, table_kwargs) -> Table:
    table = Table(caption=caption, **table_kwargs)
    for i in keep:
        c = cols[i]
        if c.wrap:
            table.add_column(c.header, justify=c.justify, overflow="fold")
        else:  # one line, as wide as its longest cell: never cut; dropped instead when secondary
            widest = max([_cell_width(r[i]) for r in rows] + [_cell_width(c.header)])
            table.add_column(c.header, justify=c.justify, no_wrap=True, overflow="fold", min_width=widest)
    for r in rows:
        table.add_row(*(r[i] for i in keep))
    return table


_SEP = re.compile(r"^\|(\s*:?-+:?\s*\|)+\s*$")


def markdown_table(lines: Sequence[str], width: int, key_headers: Sequence[str] = (), **kw: Any) -> Table:
    """A Markdown pipe table as a fitted table: the first column and ``key_headers`` are keys,
    the other columns are dropped right to left when it does not fit."""
    header, aligns, body = _cells(lines[0]), _cells(lines[1]), [_cells(line) for line in lines[2:]]
    cols = []
    for i, (h, a) in enumerate(zip(header, aligns)):
        key = i == 0 or h in key_headers
        cols.append(Col(h, KEY if key else len(header) - i, "right" if a.endswith(":") else "left",
                        wrap=key and i > 0))
    return fit_table(cols, body, width, **kw)


_PIPE = re.compile(r"(?<!\\)\|")  # a cell boundary: a pipe not escaped (``ui.markdown.cell``)


def _cells(line: str) -> list[str]:
    inner = line.strip().removeprefix("|")
    inner = inner[:-1] if inner.endswith("|") and not inner.endswith("\\|") else inner
    return [c.strip().replace("`", "").replace("\\|", "|") for c in _PIPE.split(inner)]


def print_markdown(console: Console, text: str, key_headers: Sequence[str] = ()) -> None:
    """Render Markdown, with its pipe tables as fitted tables (rich's own cut names with "…")."""
    from rich import box
    from rich.markdown import Markdown

    chunk: list[str] = []
    table: list[str] = []

    def flush_text() -> None:
        if any(line.strip() for line in chunk):
            console.print(Markdown("\n".join(chunk)))
        chunk.clear()

    for line in [*text.splitlines(), ""]:
        is_row = line.lstrip().startswith("|")
        if is_row:
            table.append(line)
            continue
        if table:
            if len(table) >= 2 and _SEP.match(table[1].strip()):
                flush_text()
                console.print(markdown_table(table, console.width, key_headers, box=box.SIMPLE_HEAD,
                                             collapse_padding=True, pad_edge=False))
                console.print()
            else:
                chunk.extend(table)
            table = []
        chunk.append(line)
    flush_text()
