"""Tiny image files for data tests (a fixture, not part of the package)."""

from pathlib import Path

import numpy as np
from PIL import Image


def png(path: Path, value: int = 0, size=(12, 20)) -> Path:
    """A grey PNG whose pixels depend on ``value`` (distinct files decode to distinct arrays)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    arr = (np.arange(size[0] * size[1]).reshape(size) + value) % 256
    Image.fromarray(arr.astype(np.uint8)).save(path)
    return path
