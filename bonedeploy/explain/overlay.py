"""Overlay PNGs: the Grad-CAM map on the preprocessed image, labelled with the decision (Pillow
and numpy only, so the edge path needs neither matplotlib nor OpenCV)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:  # pragma: no cover
    from PIL import Image

ALPHA = 0.45  # heat opacity where the map is 1 (scaled by the map: cold regions stay grey)


def jet(v: np.ndarray) -> np.ndarray:
    """The classic jet colour map, H x W in [0, 1] -> H x W x 3 uint8."""
    v = np.clip(np.asarray(v, dtype=np.float32), 0, 1)
    r = np.clip(1.5 - np.abs(4 * v - 3), 0, 1)
    g = np.clip(1.5 - np.abs(4 * v - 2), 0, 1)
    b = np.clip(1.5 - np.abs(4 * v - 1), 0, 1)
    return (np.stack([r, g, b], axis=-1) * 255).astype(np.uint8)


def overlay(image: np.ndarray, cam: np.ndarray, label: str) -> "Image.Image":
    """``image``: C x H x W preprocessed input; ``cam``: H x W in [0, 1]."""
    from PIL import Image, ImageDraw, ImageFont

    grey = np.asarray(image, dtype=np.float32).mean(axis=0)
    grey = (grey - grey.min()) / (grey.max() - grey.min() + 1e-12)
    base = np.repeat((grey * 255)[..., None], 3, axis=2)
    a = (ALPHA * np.clip(cam, 0, 1))[..., None]
    mixed = ((1 - a) * base + a * jet(cam)).astype(np.uint8)
    img = Image.fromarray(mixed)
    bar = 22
    canvas = Image.new("RGB", (img.width, img.height + bar), (0, 0, 0))
    canvas.paste(img, (0, bar))
    draw = ImageDraw.Draw(canvas)
    try:
        font = ImageFont.load_default(size=14)
    except TypeError:  # Pillow < 10.1
        font = ImageFont.load_default()
    draw.text((4, 3), label, fill=(255, 255, 255), font=font)
    return canvas


def write_overlay(path: str | Path, image: np.ndarray, cam: np.ndarray, label: str) -> Path:
    from bonedeploy.util.fs import atomic_path

    path = Path(path)
    with atomic_path(path) as tmp:
        overlay(image, cam, label).save(tmp, format="PNG")
    return path
