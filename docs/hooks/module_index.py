"""The module index of the layout page: each module of the package with the first paragraph of
its docstring, read with ``ast`` (nothing is imported), so the page follows the code as it moves."""

from __future__ import annotations

import ast
import re
from pathlib import Path

from cli_reference import escape

_RANK_ROW = re.compile(r"^\|\s*(\d+)\s*\|(.*)\|", re.M)


def ranks(layout_markdown: str) -> dict[str, int]:
    """Package name -> rank, from the page's rank table (`util/`, `errors.py`, ... in its second column)."""
    out: dict[str, int] = {}
    for m in _RANK_ROW.finditer(layout_markdown):
        for n in re.findall(r"`([\w./]+)`", m.group(2).split("|")[0]):
            out[n.rstrip("/").removesuffix(".py")] = int(m.group(1))
    return out


def ranked_packages(layout_markdown: str) -> list[str]:
    """Package names in the order of the page's rank table."""
    return list(ranks(layout_markdown))


def summary(path: Path) -> str:
    doc = ast.get_docstring(ast.parse(path.read_text())) or ""
    return " ".join(doc.split("\n\n")[0].split())


def top_level(pkg: Path) -> list[str]:
    """The package's sub-packages and top-level modules, by name."""
    return sorted(p.stem if p.is_file() else p.name for p in pkg.iterdir()
                  if (p.is_dir() and (p / "__init__.py").exists()) or (p.suffix == ".py" and p.stem != "__init__"))


def render(pkg: Path, order: list[str] | None = None) -> str:
    names = top_level(pkg)
    order = [n for n in (order or []) if n in names] + [n for n in names if n not in (order or [])]
    lines: list[str] = []
    for name in order:
        path = pkg / name
        mods = sorted(path.rglob("*.py")) if path.is_dir() else [path.with_suffix(".py")]
        title = f"{name}/" if path.is_dir() else f"{name}.py"
        lines += [f"### `{title}`", "", "| module | what it holds |", "|---|---|"]
        for m in mods:
            text = summary(m)
            if m.name == "__init__.py" and " " not in text:  # a bare package marker
                continue
            rel = m.relative_to(path).as_posix() if path.is_dir() else m.name
            lines.append(f"| `{rel}` | {escape(text)} |")
        lines.append("")
    return "\n".join(lines)
