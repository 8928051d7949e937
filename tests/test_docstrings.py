"""Measured figures live in benchmarks/results, produced by a script with the machine named; the
package's docstrings and comments say why a choice was made and may point to that script. A figure
copied into a docstring goes stale silently when the code, the runtime or the machine changes."""

from __future__ import annotations

import ast
import io
import re
import tokenize
from pathlib import Path
from typing import Iterator

PKG = Path(__file__).resolve().parents[1] / "bonedeploy"
NUM = r"\d+(?:\.\d+)?(?:\s*[-–]\s*\d+(?:\.\d+)?)?"
FIGURE = re.compile("|".join([
    rf"{NUM}\s*(?:img|images|requests?)/s\b",  # a throughput
    rf"{NUM}\s*(?:x|×)\s+(?:faster|slower|quicker|as fast|the speed|\w+'s\s+speed)",  # a speed ratio
    rf"{NUM}\s*%\s+(?:faster|slower|quicker)",
    rf"{NUM}\s*(?:ms|s|seconds)\s+(?:sooner|later|faster|slower|quicker|less|more)\b",  # a time saved
    rf"{NUM}\s*(?:ms|s)\s+vs\.?\s+{NUM}",  # a timed comparison
    rf"\({NUM}\s*(?:ms|s)\b",  # "(0.85 s ...)": what something took
    r"\bmeasured on (?:a|the|this) \d",  # "measured on the 2-core ..."
]), re.I)


def prose(path: Path) -> Iterator[tuple[int, str]]:
    """(line, text) of every docstring and comment of a module."""
    src = path.read_text()
    for node in ast.walk(ast.parse(src)):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            doc = ast.get_docstring(node, clean=False)
            if doc:
                yield getattr(node, "lineno", 1), doc
    for tok in tokenize.generate_tokens(io.StringIO(src).readline):
        if tok.type == tokenize.COMMENT:
            yield tok.start[0], tok.string


def figures(path: Path) -> list[str]:
    """The measured figures in a module's prose, as they are written."""
    return [m.group(0) for _, text in prose(path) for m in FIGURE.finditer(text)]


def test_the_detector_finds_the_figures_it_is_for(tmp_path):
    sample = tmp_path / "m.py"
    sample.write_text('"""Static was 2-4% faster per batch; dynamic reached its first result 0.5-0.6 s sooner.\n'
                      'At about 1.5x sha256\'s\nspeed. Serves 85 img/s. Skips sklearn (0.85 s).\n'
                      'A step took 2.8 s vs 3.7 s in fp32."""\n'
                      '# Measured on the 2-core EPYC.\n'
                      'X = 1  # polled every 2 ms; a 590 MB checkpoint; 95% interval; 2x the binary one\n')
    assert figures(sample) == ["2-4% faster", "0.5-0.6 s sooner", "1.5x sha256's\nspeed", "85 img/s", "(0.85 s",
                               "2.8 s vs 3.7", "Measured on the 2"]


def test_no_measured_figures_in_the_package_docstrings():
    found = [f"{p.relative_to(PKG)}: {f!r}" for p in sorted(PKG.rglob("*.py")) for f in figures(p)]
    assert not found, "move these to benchmarks/results (the docstring may name the script):\n" + "\n".join(found)
