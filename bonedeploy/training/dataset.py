"""The run's data: the split manifest and the decoded train/val tensors (decoded once per run).

On CUDA the tensors are moved to the GPU once and stay there for the whole run.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from bonedeploy import CLASSES
from bonedeploy.errors import DataError
from bonedeploy.data.preprocess import PreprocessSpec
from bonedeploy.training.config import TrainConfig
from bonedeploy.training.progress import Reporter


@dataclass
class TrainingData:
    split: dict[str, Any]  # SplitManifest.to_dict()
    classes: tuple[str, ...]
    x_train: torch.Tensor  # N x C x H x W float32
    y_train: torch.Tensor  # N int64
    x_val: torch.Tensor
    y_val: torch.Tensor
    train_paths: list[str]
    val_paths: list[str]
    bad: list[dict[str, str]]  # files left out by --skip-bad: {"path", "cause"}
    _placed: dict[str, tuple] = field(default_factory=dict, repr=False)

    def on(self, device: torch.device) -> tuple[torch.Tensor, ...]:
        """(x_train, y_train, x_val, y_val) on ``device``; copied there once, then reused."""
        key = str(device)
        if key not in self._placed:
            self._placed[key] = tuple(t.to(device) for t in
                                      (self.x_train, self.y_train, self.x_val, self.y_val))
        return self._placed[key]


def pick_classes(root: str | Path, asked: tuple[str, ...] | None) -> tuple[str, ...] | None:
    """``--classes`` when given; else the seed's classes when both folders exist (so an
    unlabelled ``test/`` folder beside them is not taken for a class); else every folder."""
    from bonedeploy.data.folders import known_classes

    return tuple(asked) if asked else known_classes(root, CLASSES)


def build_split(cfg: TrainConfig):
    from bonedeploy.data.folders import scan_image_folder
    from bonedeploy.data.split import make_split, split_from_folders

    classes = pick_classes(cfg.data, cfg.classes)
    if cfg.val:
        return split_from_folders(cfg.data, cfg.val, list(classes) if classes else None)
    scan = scan_image_folder(cfg.data, classes)
    return make_split(scan, val_fraction=cfg.val_fraction, seed=cfg.split_seed)


def load_training_data(cfg: TrainConfig, spec: PreprocessSpec, reporter: Reporter,
                       manifest=None) -> TrainingData:
    """Scan, split, check sizes, decode. Raises DataError (nothing written) on unusable data.
    ``manifest``: a split already made (a DDP job's rank 0 makes it once for every rank)."""
    from bonedeploy.data.decode import decode_dataset

    manifest = manifest if manifest is not None else build_split(cfg)
    check_sizes(len(manifest.train), len(manifest.val), cfg.batch_size, cfg.data)
    counts = manifest.counts()
    reporter.message(
        f"data: {len(manifest.train)} train {counts['train']} / {len(manifest.val)} val "
        f"{counts['val']} from {manifest.root}")
    # One decode for both parts, so an error lists every unreadable file at once.
    items = manifest.items("train") + manifest.items("val")
    dec = decode_dataset(manifest.root, items, spec, workers=cfg.workers, skip_bad=cfg.skip_bad,
                         progress=reporter.decode_progress())
    bad = [{"path": str(p), "cause": c} for p, c in dec.bad]
    if bad:
        reporter.message(f"left out {len(bad)} unreadable image(s) (--skip-bad); listed in the report")
    root = Path(manifest.root)
    val_set = {root / p for p, _ in manifest.items("val")}
    # decode keeps the item order (train first), so both parts are views of one tensor
    n_tr = sum(Path(p) not in val_set for p in dec.paths)
    assert all(Path(p) in val_set for p in dec.paths[n_tr:]), "decode_dataset reordered items"
    x, y = torch.from_numpy(dec.x), torch.from_numpy(dec.y)
    check_sizes(n_tr, len(dec.paths) - n_tr, cfg.batch_size, cfg.data, after_skip=bool(bad))
    paths = [_rel(p, root) for p in dec.paths]
    return TrainingData(
        split=manifest.to_dict(), classes=tuple(manifest.classes),
        x_train=x[:n_tr], y_train=y[:n_tr], x_val=x[n_tr:], y_val=y[n_tr:],
        train_paths=paths[:n_tr], val_paths=paths[n_tr:],
        bad=bad)


def check_sizes(n_train: int, n_val: int, batch_size: int, data: str, after_skip: bool = False) -> None:
    why = " after leaving out unreadable images" if after_skip else ""
    if n_train < batch_size:
        raise DataError(f"{data}: {n_train} training images{why}, fewer than the batch size "
                        f"{batch_size}; add images or lower --batch-size")
    if n_val == 0:
        raise DataError(f"{data}: no validation images{why}")


def _rel(path: Path, root: Path) -> str:
    try:
        return Path(path).relative_to(root).as_posix()
    except ValueError:
        return str(path)
