"""Image-folder datasets: scanning, listing inputs, and the decode-once cache.

Layout as the seed (and torchvision's ImageFolder): ``root/<Class>/**/<image>``; class index =
position of the folder name in sorted order. Hidden entries (name starting with '.') and files
whose suffix is not in ``IMAGE_SUFFIXES`` are skipped and counted; suffix-less files that carry the
DICOM preamble are images. The train/val split manifest lives in ``bonedeploy.data.split`` and is
re-exported here.
"""

from __future__ import annotations

import math
import os
from collections import Counter
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Sequence

import numpy as np

from bonedeploy.errors import DataError, ImageReadError
from bonedeploy.data.imageio import IMAGE_SUFFIXES, has_dicom_preamble, read_image
from bonedeploy.data.preprocess import PreprocessSpec
from bonedeploy.data.split import SPLIT_FORMAT, SplitManifest, make_split, split_from_folders

__all__ = [
    "DecodedSet", "FolderScan", "SPLIT_FORMAT", "SplitManifest", "decode_dataset", "list_images",
    "make_split", "progress_bar", "scan_image_folder", "split_from_folders",
]

SKIP_HIDDEN = "hidden"
SKIP_SUFFIX = "not an image file (suffix)"
SKIP_OUTSIDE = "outside class folders"
SKIP_OTHER_CLASS = "folder not in the requested classes"
SKIP_UNREADABLE = "unreadable folder"

Progress = Callable[[int, int], None]


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


# ---------------------------------------------------------------- decode-once cache


@dataclass
class DecodedSet:
    x: np.ndarray  # N x C x H x W float32, preprocessed
    y: np.ndarray  # N int64
    paths: list[Path]  # root / relative path, aligned with x and y
    bad: list[tuple[Path, str]]  # files left out (skip_bad) with their cause

    def __len__(self) -> int:
        return len(self.paths)


def decode_dataset(root: str | Path, items: Iterable[Any], spec: PreprocessSpec,
                   workers: int | None = None, skip_bad: bool = False,
                   progress: Progress | bool | None = None) -> DecodedSet:
    """Read and preprocess every image once (numpy path), in a process pool.

    ``items``: (relative path, label) pairs (``FolderScan.items``) or manifest entries
    ({"path", "label", ...}). ``progress``: a ``(done, total)`` callback, or True for a rich bar.
    Unreadable files raise one DataError listing every bad file and its cause, unless
    ``skip_bad``, which leaves them out and returns them in ``bad``.
    """
    root = Path(root)
    pairs = [_as_pair(it) for it in items]
    paths = [root / p for p, _ in pairs]
    y = np.fromiter((label for _, label in pairs), dtype=np.int64, count=len(pairs))
    x = np.empty((len(paths), *spec.input_shape), dtype=np.float32)  # preallocated once
    ok = np.zeros(len(paths), dtype=bool)
    bad: list[tuple[Path, str]] = []
    bar = progress_bar("decoding images") if progress is True else nullcontext(progress or None)
    with bar as report:
        for start, results in _decode_chunks(paths, spec, _workers(workers, len(paths)), report):
            for i, (arr, cause) in enumerate(results, start):
                if cause is None:
                    x[i], ok[i] = arr, True
                else:
                    bad.append((paths[i], cause))
    bad.sort(key=lambda b: b[0].as_posix())
    if bad and not skip_bad:
        lines = "\n".join(f"  {p}: {c}" for p, c in bad)
        raise DataError(f"{len(bad)} of {len(paths)} images under {root} could not be read "
                        f"(skip them with skip_bad / --skip-bad):\n{lines}")
    if bad:
        if not ok.any():
            raise DataError(f"none of the {len(paths)} images under {root} could be read")
        keep = np.flatnonzero(ok)
        for dst, src in enumerate(keep):  # compact in place, row by row: no second full array
            if dst != src:
                x[dst] = x[src]
        x, y = x[: len(keep)], y[keep]
        paths = [paths[i] for i in keep]
    return DecodedSet(x, y, paths, bad)


def _as_pair(item: Any) -> tuple[Path, int]:
    if isinstance(item, dict):
        return Path(item["path"]), int(item["label"])
    path, label = item
    return Path(path), int(label)


def _workers(requested: int | None, n: int) -> int:
    if requested is None:
        requested = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (
            os.cpu_count() or 1)
    return max(1, min(int(requested), n))


def _decode_chunks(paths: list[Path], spec: PreprocessSpec, workers: int,
                   report: Progress | None) -> Iterator[tuple[int, list]]:
    """Yield (start index, [(array | None, cause | None), ...]) per chunk, reporting progress."""
    total, done = len(paths), 0
    if report:
        report(0, total)
    if workers <= 1:
        for i, path in enumerate(paths):
            yield i, _decode_chunk([path], spec)
            if report:
                report(i + 1, total)
        return
    size = max(1, min(32, math.ceil(total / (workers * 4))))
    # The platform's default start method, as torch's DataLoader: fork on Linux up to Python 3.13
    # (no re-import of the caller's __main__; workers use only numpy/PIL, never torch or CUDA).
    pool = ProcessPoolExecutor(max_workers=workers)
    try:
        pending = {pool.submit(_decode_chunk, paths[s : s + size], spec): s
                   for s in range(0, total, size)}
        while pending:
            finished, _ = wait(pending, return_when=FIRST_COMPLETED)
            for fut in finished:
                start = pending.pop(fut)
                results = fut.result()
                yield start, results
                done += len(results)
                if report:
                    report(done, total)
    except BrokenProcessPool as e:
        raise DataError(f"an image-decoding worker died ({e}); "
                        "out of memory? retry with fewer workers (workers=1)") from e
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def _decode_chunk(paths: list[Path], spec: PreprocessSpec) -> list[tuple[np.ndarray | None,
                                                                          str | None]]:
    out: list[tuple[np.ndarray | None, str | None]] = []
    for path in paths:
        try:
            out.append((spec.apply(read_image(path)), None))
        except ImageReadError as e:
            out.append((None, e.cause))
        except Exception as e:  # a bug or an odd file must not hide the other files' results
            out.append((None, f"{type(e).__name__}: {e}"))
    return out


@contextmanager
def progress_bar(description: str, enabled: bool = True) -> Iterator[Progress | None]:
    """A rich progress bar on stderr as a ``(done, total)`` callback (None when disabled)."""
    if not enabled:
        yield None
        return
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress as Bar, TimeRemainingColumn

    with Bar("[progress.description]{task.description}", BarColumn(), MofNCompleteColumn(),
             TimeRemainingColumn(), console=Console(stderr=True), transient=False) as bar:
        task = bar.add_task(description, total=None)
        yield lambda done, total: bar.update(task, completed=done, total=total)
