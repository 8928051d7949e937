"""Self-describing checkpoints: tensors and plain types only, loadable with weights_only=True.

Layout (``FORMAT``)::

    format        "bonedeploy.checkpoint/1"
    card          ModelCard.to_dict(): model name, classes, PreprocessSpec, precision "fp32"
    model_kwargs  kwargs for create_model (e.g. dropout)
    state_dict    the weights
    config        the resolved training config
    split         the SplitManifest dict (train/val relative paths + sha256), data_root
    epoch, metrics, history, versions, skipped_bad
    runtime       device name, precision, channels_last, deterministic, threads of the run
    (last.pt only) optimizer, rng, scheduler state; best (the best epoch's metrics so far)
"""

from __future__ import annotations

import pickle
import zipfile
from pathlib import Path
from typing import Any

from bonedeploy.artefacts.card import ModelCard
from bonedeploy.errors import CheckpointError
from bonedeploy.util.fs import atomic_path, require_file

FORMAT = "bonedeploy.checkpoint/1"


def save_checkpoint(path: str | Path, ckpt: dict[str, Any]) -> Path:
    """Atomically write ``ckpt`` (temp file + rename)."""
    import torch

    if ckpt.get("format") != FORMAT:
        ckpt = {"format": FORMAT, **ckpt}
    path = Path(path)
    with atomic_path(path) as tmp:
        torch.save(ckpt, tmp)
    return path


def load_checkpoint(path: str | Path, map_location: str = "cpu") -> dict[str, Any]:
    """Load and validate; every failure is a one-line ``CheckpointError`` naming the file."""
    import torch

    path = require_file(path, CheckpointError)
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise CheckpointError(
            f"{path}: refused by torch.load(weights_only=True) -- it holds pickled objects, "
            f"not a bonedeploy checkpoint ({first[:160]})"
        ) from e
    except (RuntimeError, EOFError, zipfile.BadZipFile, OSError, ValueError) as e:
        msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise CheckpointError(f"{path}: unreadable or truncated checkpoint ({msg[:160]})") from e
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not a bonedeploy checkpoint (no '{FORMAT}' format tag)")
    for key in ("card", "state_dict", "model_kwargs"):
        if key not in ckpt:
            raise CheckpointError(f"{path}: bonedeploy checkpoint without '{key}'")
    return ckpt


def card_from_checkpoint(ckpt: dict[str, Any], where: str = "checkpoint") -> ModelCard:
    return ModelCard.from_dict(ckpt["card"], where)


def model_from_checkpoint(ckpt: dict[str, Any], where: str = "checkpoint"):
    """The ``nn.Module`` in eval mode with the checkpoint's weights."""
    from bonedeploy.models import create_model

    card = card_from_checkpoint(ckpt, where)
    model = create_model(card.model, **ckpt.get("model_kwargs", {}))
    try:
        model.load_state_dict(ckpt["state_dict"])
    except RuntimeError as e:
        raise CheckpointError(f"{where}: weights do not fit {card.model} ({str(e).splitlines()[0]})") from e
    return model.eval()
