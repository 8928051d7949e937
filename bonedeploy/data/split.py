"""The train/validation split as a manifest that training, the checkpoint and bench all share.

Paths are stored relative to the data root (posix), each with its sha256, so a later run can
prove it is looking at the same files (``verify``) and a moved data folder can be re-rooted.

The split rule (``make_split``), per class so that it is stratified:
- n_val = ceil(n * val_fraction), computed on the exact decimal fraction (no float noise), the
  rule of scikit-learn's ``train_test_split``. For the seed's 176 Fractured + 177 Normal at 0.2
  this gives 36 + 36 validation and 140 + 141 training images, the seed's 281 / 72.
- which images go to validation: the n_val smallest sha256("<seed>:<relative path>"). That depends
  only on the seed and the file's own name, never on a library's RNG stream: identical on every
  machine and numpy version, and adding an image to one class never reshuffles another.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bonedeploy.errors import ConfigError, DataError
from bonedeploy.util.fs import sha256_file, write_json

if TYPE_CHECKING:
    from bonedeploy.data.folders import FolderScan

SPLIT_FORMAT = "bonedeploy.split/1"


@dataclass
class SplitManifest:
    root: str  # absolute data root the relative paths hang from
    classes: tuple[str, ...]
    seed: int | None  # None when the validation set was an explicit folder
    val_fraction: float | None
    train: list[dict[str, Any]] = field(default_factory=list)  # {"path", "label", "sha256"}
    val: list[dict[str, Any]] = field(default_factory=list)

    def counts(self) -> dict[str, dict[str, int]]:
        """{"train": {class: n}, "val": {class: n}}."""
        return {name: {c: sum(e["label"] == i for e in entries) for i, c in enumerate(self.classes)}
                for name, entries in (("train", self.train), ("val", self.val))}

    def items(self, subset: str) -> list[tuple[Path, int]]:
        """(relative path, label) pairs of "train" or "val", for ``decode_dataset``."""
        if subset not in ("train", "val"):
            raise ConfigError(f"subset must be one of 'train', 'val'; got {subset!r}")
        return [(Path(e["path"]), int(e["label"])) for e in getattr(self, subset)]

    def to_dict(self) -> dict[str, Any]:
        return {"format": SPLIT_FORMAT, "root": self.root, "classes": list(self.classes),
                "seed": self.seed, "val_fraction": self.val_fraction,
                "train": [dict(e) for e in self.train], "val": [dict(e) for e in self.val]}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "SplitManifest":
        fmt = data.get("format")
        if fmt != SPLIT_FORMAT:
            raise DataError(f"not a split manifest: format {fmt!r}, expected {SPLIT_FORMAT!r}")
        try:
            entries = {k: [{"path": str(e["path"]), "label": int(e["label"]),
                            "sha256": str(e["sha256"])} for e in data[k]] for k in ("train", "val")}
            return cls(root=str(data["root"]), classes=tuple(data["classes"]), seed=data["seed"],
                       val_fraction=data["val_fraction"], **entries)
        except (KeyError, TypeError, ValueError) as e:
            raise DataError(f"split manifest is incomplete or malformed ({type(e).__name__}: {e})"
                            ) from e

    def write(self, path: str | Path) -> None:
        write_json(path, self.to_dict())  # atomic

    @classmethod
    def read(cls, path: str | Path) -> "SplitManifest":
        try:
            data = json.loads(Path(path).read_text())
        except FileNotFoundError as e:
            raise DataError(f"split manifest not found: {path}") from e
        except (OSError, ValueError) as e:
            raise DataError(f"cannot read split manifest {path}: {e}") from e
        return cls.from_dict(data)

    def verify(self, root: str | Path | None = None) -> list[str]:
        """Problems that make the files under ``root`` (default: the recorded root) differ from the
        manifest: missing files and files whose sha256 changed. Empty list = same dataset."""
        base = Path(root if root is not None else self.root)
        if not base.is_dir():
            return [f"data folder not found: {base}"]
        problems = []
        for entry in [*self.train, *self.val]:
            path = base / entry["path"]
            if not path.is_file():
                problems.append(f"missing: {path}")
            elif sha256_file(path) != entry["sha256"]:
                problems.append(f"changed (sha256 differs): {path}")
        return problems

    def ensure_matches(self, root: str | Path | None = None) -> None:
        """``verify`` as a DataError naming the first problems."""
        problems = self.verify(root)
        if problems:
            shown = "; ".join(problems[:5]) + (f"; ... {len(problems) - 5} more"
                                               if len(problems) > 5 else "")
            raise DataError(f"the data no longer matches the split manifest "
                            f"({len(problems)} problems): {shown}")


def make_split(scan: "FolderScan", val_fraction: float = 0.2, seed: int = 0) -> SplitManifest:
    """Deterministic stratified split of a scanned folder (rule in the module docstring)."""
    if not 0.0 < val_fraction < 1.0:
        raise ConfigError(f"val_fraction must be between 0 and 1 (exclusive), got {val_fraction}")
    frac = Fraction(str(val_fraction))
    train, val = [], []
    for label, name in enumerate(scan.classes):
        paths = sorted((p for p, lab in scan.items if lab == label), key=lambda p: p.as_posix())
        n_val = math.ceil(frac * len(paths))
        if n_val >= len(paths):
            raise DataError(f"class {name!r} in {scan.root} has {len(paths)} image(s): too few to "
                            f"hold out {val_fraction:g} for validation and keep one for training")
        ranked = sorted(paths, key=lambda p: _rank(seed, p))
        held = set(ranked[:n_val])
        for p in paths:
            (val if p in held else train).append(_entry(scan.root, p, label))
    return SplitManifest(_absolute(scan.root), tuple(scan.classes), int(seed), float(val_fraction),
                         _sorted(train), _sorted(val))


def split_from_folders(train_root: str | Path, val_root: str | Path,
                       classes: list[str] | None = None) -> SplitManifest:
    """Use an explicit validation folder; both folders must have the same class folders."""
    from bonedeploy.data.folders import scan_image_folder

    tr, va = scan_image_folder(train_root, classes), scan_image_folder(val_root, classes)
    if tr.classes != va.classes:
        raise DataError(f"class folders differ: {train_root} has {list(tr.classes)}, "
                        f"{val_root} has {list(va.classes)}")
    root = Path(os.path.commonpath([_absolute(tr.root), _absolute(va.root)]))

    def entries(scan: "FolderScan") -> list[dict[str, Any]]:
        base = Path(_absolute(scan.root)).relative_to(root)
        return _sorted([_entry(root, base / p, lab) for p, lab in scan.items])

    return SplitManifest(str(root), tr.classes, None, None, entries(tr), entries(va))


def _rank(seed: int, path: Path) -> str:
    return hashlib.sha256(f"{seed}:{path.as_posix()}".encode()).hexdigest()


def _entry(root: str | Path, rel: Path, label: int) -> dict[str, Any]:
    return {"path": rel.as_posix(), "label": int(label), "sha256": sha256_file(Path(root) / rel)}


def _sorted(entries: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return sorted(entries, key=lambda e: e["path"])


def _absolute(path: str | Path) -> str:
    return os.path.abspath(os.fspath(path))
