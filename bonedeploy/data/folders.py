"""Image-folder datasets: scanning and listing inputs (decoding them: ``bonedeploy.data.decode``).

Layout as the seed (and torchvision's ImageFolder): ``root/<Class>/**/<image>``; class index =
position of the folder name in sorted order. Hidden entries (name starting with '.') and files
whose suffix is not in ``IMAGE_SUFFIXES`` are skipped and counted; suffix-less files that carry the
DICOM preamble are images. The train/val split manifest lives in ``bonedeploy.data.split``.
"""

from __future__ import annotations

import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Sequence

from bonedeploy.errors import DataError
from bonedeploy.data.imageio import IMAGE_SUFFIXES, has_dicom_preamble

__all__ = ["FolderScan", "known_classes", "list_images", "scan_image_folder"]

SKIP_HIDDEN = "hidden"
SKIP_SUFFIX = "not an image file (suffix)"
SKIP_OUTSIDE = "outside class folders"
SKIP_OTHER_CLASS = "folder not in the requested classes"
SKIP_UNREADABLE = "unreadable folder"


@dataclass
class FolderScan:
    root: Path
    classes: tuple[str, ...]
    items: list[tuple[Path, int]]  # (path relative to root, class index), sorted by path
    skipped: dict[str, int] = field(default_factory=dict)  # reason -> count

    def counts(self) -> dict[str, int]:
        per = Counter(label for _, label in self.items)
        return {name: per[i] for i, name in enumerate(self.classes)}

    def describe(self) -> str:
        per = ", ".join(f"{k} {v}" for k, v in self.counts().items())
        text = f"{len(self.items)} images in {self.root} ({per})"
        if self.skipped:
            text += "; skipped " + ", ".join(f"{v} {k}" for k, v in sorted(self.skipped.items()))
        return text


def known_classes(root: str | Path, expected: Sequence[str] | None) -> tuple[str, ...] | None:
    """``expected`` when each is a folder under ``root``, else None (every folder is a class).

    The one rule for labelled trees: an unlabelled ``test/`` folder beside ``Fractured/`` and
    ``Normal/`` is not a third class, while a tree without those folders is scanned as it is (and
    its classes are then checked against the model's by the caller)."""
    root = Path(root)
    if expected and root.is_dir() and all((root / c).is_dir() for c in expected):
        return tuple(expected)
    return None


def scan_image_folder(root: str | Path, classes: Sequence[str] | None = None) -> FolderScan:
    """Find ``root/<Class>/**/<image>``. ``classes`` restricts to those folders (others counted in
    ``skipped``), e.g. to ignore an unlabelled ``test/`` folder beside Fractured/ and Normal/."""
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"dataset folder not found: {root}")
    skipped: Counter[str] = Counter()
    folders = []
    for entry in sorted(os.scandir(root), key=lambda e: e.name):
        if entry.name.startswith("."):
            skipped[SKIP_HIDDEN] += 1
        elif entry.is_dir():
            folders.append(entry.name)
        else:
            skipped[SKIP_OUTSIDE] += 1
    if classes is not None:
        missing = sorted(set(classes) - set(folders))
        if missing:
            raise DataError(f"class folder(s) {missing} not found in {root}; found {folders}")
        skipped[SKIP_OTHER_CLASS] += len(set(folders) - set(classes))
        folders = sorted(set(classes))
    if not folders:
        raise DataError(f"no class folders in {root}: expected {root}/<class>/<images>, "
                        "e.g. Fractured/ and Normal/")
    if len(folders) < 2:
        raise DataError(f"only one class folder ({folders[0]}) in {root}: need at least two")
    items: list[tuple[Path, int]] = []
    for label, name in enumerate(folders):
        found = _walk_images(root / name, skipped)
        if not found:
            raise DataError(f"class folder {root / name} has no images "
                            f"(suffixes: {' '.join(sorted(IMAGE_SUFFIXES))})")
        items.extend((p.relative_to(root), label) for p in found)
    return FolderScan(root, tuple(folders), items, {k: v for k, v in skipped.items() if v})


def list_images(inputs: str | Path | Iterable[str | Path]) -> tuple[list[Path], int]:
    """Files and folders (recursive) -> (sorted unique image paths, number of entries skipped).

    Folders are filtered like ``scan_image_folder``. A file named explicitly is always kept, even
    with an unknown suffix, so that inference reports it as an error row instead of dropping it
    silently. A missing input is a DataError.
    """
    if isinstance(inputs, (str, Path)):
        inputs = [inputs]
    skipped: Counter[str] = Counter()
    found: dict[str, Path] = {}
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            paths = _walk_images(path, skipped)
        elif path.exists():
            paths = [path]
        else:
            raise DataError(f"input not found: {path}")
        for p in paths:
            found.setdefault(os.path.realpath(p), p)
    return sorted(found.values(), key=lambda p: p.as_posix()), sum(skipped.values())


def _walk_images(folder: Path, skipped: Counter[str]) -> list[Path]:
    """Image files under ``folder`` (recursive, follows links once), sorted by path."""
    out: list[Path] = []
    seen: set[str] = set()

    def unreadable(_err: OSError) -> None:
        skipped[SKIP_UNREADABLE] += 1

    for dirpath, dirnames, filenames in os.walk(folder, onerror=unreadable, followlinks=True):
        real = os.path.realpath(dirpath)
        if real in seen:  # a symlink loop: walk each real folder once
            dirnames[:] = []
            continue
        seen.add(real)
        hidden = [d for d in dirnames if d.startswith(".")]
        skipped[SKIP_HIDDEN] += len(hidden)
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in filenames:
            path = Path(dirpath) / name
            if name.startswith("."):
                skipped[SKIP_HIDDEN] += 1
            elif path.suffix.lower() in IMAGE_SUFFIXES or (not path.suffix and
                                                           has_dicom_preamble(path)):
                out.append(path)
            else:
                skipped[SKIP_SUFFIX] += 1
    return sorted(out, key=lambda p: p.as_posix())
