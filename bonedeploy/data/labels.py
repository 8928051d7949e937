"""Ground-truth labels for inference inputs: from class-named folders or a ``path,label`` CSV.

Both return ``{absolute path: class index}`` (``bonedeploy.util.fs.path_key``) for the inputs
they can label; the others stay unlabelled and are left out of the metrics (and counted).
"""

from __future__ import annotations

import csv
import os
from pathlib import Path
from typing import Sequence

from bonedeploy.errors import ConfigError
from bonedeploy.util.fs import path_key


def folder_labels(paths: Sequence[Path], classes: Sequence[str]) -> dict[str, int]:
    """Label = the nearest enclosing folder named like a class (``.../Fractured/x.png``, also
    ``.../Fractured/patient7/x.png``), as the ImageFolder layout training used."""
    index = {c: i for i, c in enumerate(classes)}
    out = {}
    for p in paths:
        for parent in Path(path_key(p)).parents:
            if parent.name in index:
                out[path_key(p)] = index[parent.name]
                break
    return out


def _label_index(value: str, classes: Sequence[str], where: str) -> int:
    value = value.strip()
    lower = [c.lower() for c in classes]
    if value.lower() in lower:
        return lower.index(value.lower())
    if value.isdigit() and int(value) < len(classes):
        return int(value)
    raise ConfigError(f"{where}: label {value!r} is not a class; valid: {', '.join(classes)} "
                      f"(or their indices 0..{len(classes) - 1})")


def read_labels_csv(csv_path: str | Path, classes: Sequence[str], paths: Sequence[Path]) -> dict[str, int]:
    """Labels for ``paths`` from ``path,label`` rows (a label is a class name, any case, or its index).

    A row's path matches an input when it names the same file relative to the CSV's folder or to
    the current directory, else when it is a trailing part of the input's path: ``synth`` writes
    ``test_answers.csv`` beside ``test/`` with paths relative to ``test/``. Row paths that are
    ambiguous (the same trailing part with different labels) are not used.
    """
    rows = _read_rows(Path(csv_path), classes)
    exact: dict[str, int] = {}
    tails: dict[tuple[str, ...], int | None] = {}
    for rel, lab in rows:
        for c in ([rel] if rel.is_absolute() else [Path(csv_path).parent / rel, rel]):
            exact[path_key(c)] = lab
        tail = Path(os.path.normpath(rel)).parts
        tails[tail] = lab if tails.get(tail, lab) == lab else None
    out: dict[str, int] = {}
    longest = max((len(t) for t in tails), default=0)
    for p in paths:
        key = path_key(p)
        if key in exact:
            out[key] = exact[key]
            continue
        parts = Path(key).parts
        for k in range(min(longest, len(parts)), 0, -1):
            lab = tails.get(parts[-k:])
            if lab is not None:
                out[key] = lab
                break
    return out


def _read_rows(csv_path: Path, classes: Sequence[str]) -> list[tuple[Path, int]]:
    if not csv_path.is_file():
        raise ConfigError(f"--labels {csv_path}: no such file")
    with open(csv_path, newline="", encoding="utf-8-sig") as fh:
        reader = csv.DictReader(fh)
        cols = reader.fieldnames or []
        if "path" not in cols or "label" not in cols:
            raise ConfigError(f"--labels {csv_path}: needs columns 'path' and 'label'; found {cols}")
        return [(Path(row["path"] or ""), _label_index(row["label"] or "", classes, f"{csv_path}:{line}"))
                for line, row in enumerate(reader, start=2) if row.get("path")]
