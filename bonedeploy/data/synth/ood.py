"""Images that are not elbow radiographs, made here (never downloaded): what the out-of-distribution
gate is compared and checked on.

Each kind is a registry entry ``name -> maker(rng, size) -> H x W float32 in [0, 1]``:

- far from any radiograph: ``blank`` (one grey level: black, white, mid), ``noise`` (uniform,
  Gaussian, salt-and-pepper, smooth blobs), ``gradient`` (linear and radial), ``text`` (a page of
  grey text lines on white, PIL's own font), ``pattern`` (stripes, checkers, shapes);
- radiograph-like but not an elbow: ``chest`` (a crude frontal chest film: lung fields, spine,
  ribs, exposed like the elbow generator's films);
- an elbow made unreadable: ``inverted`` (a negative, as a misread MONOCHROME1 gives), ``blurred``
  (Gaussian, sigma 6-10 px), ``noisy`` (additive noise, sigma 0.25-0.4).

``FAR`` kinds are what the gate must refuse; the others are reported, not promised.
"""

from __future__ import annotations

from typing import Callable

import numpy as np

from bonedeploy.errors import ConfigError

Maker = Callable[[np.random.Generator, int], np.ndarray]
_KINDS: dict[str, Maker] = {}
FAR = ("blank", "noise", "gradient", "text", "pattern")  # nothing like a radiograph
NEAR = ("chest", "inverted", "blurred", "noisy")  # radiograph-like: reported, not promised


def register_kind(name: str, maker: Maker) -> Maker:
    if name in _KINDS:
        raise ValueError(f"non-radiograph kind {name!r} is already registered")
    _KINDS[name] = maker
    return maker


def kinds() -> tuple[str, ...]:
    return tuple(_KINDS)


def make_images(kind: str, n: int, size: int = 400, seed: int = 0) -> list[np.ndarray]:
    """``n`` images of ``kind``, ``size`` x ``size`` float32 in [0, 1], the same for the same seed."""
    if kind not in _KINDS:
        raise ConfigError(f"unknown non-radiograph kind {kind!r}; valid: {', '.join(_KINDS)}")
    rng = np.random.default_rng([seed, sorted(_KINDS).index(kind)])
    return [np.clip(_KINDS[kind](rng, size), 0.0, 1.0).astype(np.float32) for _ in range(n)]


def _blank(rng: np.random.Generator, size: int) -> np.ndarray:
    level = rng.choice([0.0, 1.0, rng.uniform(0.05, 0.95)])
    return np.full((size, size), level, np.float32)


def _noise(rng: np.random.Generator, size: int) -> np.ndarray:
    how = rng.integers(4)
    if how == 0:
        return rng.random((size, size), dtype=np.float32)
    if how == 1:
        return rng.normal(rng.uniform(0.3, 0.7), rng.uniform(0.1, 0.3), (size, size))
    if how == 2:
        return (rng.random((size, size)) < rng.uniform(0.2, 0.8)).astype(np.float32)
    blobs = _smooth(rng.standard_normal((size, size)), rng.uniform(4, 20))
    return (blobs - blobs.min()) / (np.ptp(blobs) + 1e-9)


def _smooth(a: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian blur by FFT (numpy only: the export gate's probes run without scipy)."""
    fy = np.fft.fftfreq(a.shape[0])[:, None]
    fx = np.fft.rfftfreq(a.shape[1])[None, :]
    kernel = np.exp(-2 * (np.pi * sigma) ** 2 * (fx ** 2 + fy ** 2))
    return np.fft.irfft2(np.fft.rfft2(a) * kernel, s=a.shape)


def _gradient(rng: np.random.Generator, size: int) -> np.ndarray:
    yy, xx = np.mgrid[0:size, 0:size] / size
    if rng.random() < 0.5:
        a = rng.uniform(0, 2 * np.pi)
        g = np.cos(a) * xx + np.sin(a) * yy
    else:
        cx, cy = rng.uniform(0.2, 0.8, 2)
        g = np.hypot(xx - cx, yy - cy)
    lo, hi = sorted(rng.uniform(0, 1, 2))
    return lo + (hi - lo) * (g - g.min()) / (np.ptp(g) + 1e-9)


def _text(rng: np.random.Generator, size: int) -> np.ndarray:
    from PIL import Image, ImageDraw, ImageFont

    page = Image.new("L", (size, size), int(rng.integers(215, 256)))
    draw = ImageDraw.Draw(page)
    px = int(rng.integers(9, 16))
    try:
        font = ImageFont.load_default(size=px)
    except (TypeError, ImportError, OSError):  # Pillow without FreeType: the small bitmap font
        font = ImageFont.load_default()
    letters = np.array(list("abcdefghijklmnopqrstuvwxyz      ,."))
    y, ink = int(rng.integers(4, 20)), int(rng.integers(0, 110))
    while y < size - px:
        draw.text((int(rng.integers(4, 24)), y), "".join(rng.choice(letters, size=size // 5)), fill=ink, font=font)
        y += int(px * rng.uniform(1.3, 1.8))
    return np.asarray(page, np.float32) / 255.0


def _pattern(rng: np.random.Generator, size: int) -> np.ndarray:
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    period = rng.uniform(6, 60)
    how = rng.integers(3)
    if how == 0:
        a = rng.uniform(0, np.pi)
        return 0.5 + 0.5 * np.sign(np.sin((np.cos(a) * xx + np.sin(a) * yy) * 2 * np.pi / period))
    if how == 1:
        return ((xx // period + yy // period) % 2).astype(np.float32)
    from PIL import Image, ImageDraw

    img = Image.new("L", (size, size), int(rng.integers(0, 256)))
    draw = ImageDraw.Draw(img)
    for _ in range(int(rng.integers(3, 12))):
        x0, y0 = rng.integers(0, size, 2)
        w, h = rng.integers(size // 10, size // 2, 2)
        box = [int(x0), int(y0), int(x0 + w), int(y0 + h)]
        (draw.ellipse if rng.random() < 0.5 else draw.rectangle)(box, fill=int(rng.integers(0, 256)))
    return np.asarray(img, np.float32) / 255.0


def _chest(rng: np.random.Generator, size: int) -> np.ndarray:
    """A frontal chest film: body outline, two air-filled lung fields, spine and mediastinum,
    rib arcs; attenuation -> exposure -> blur and noise, as the elbow generator's films."""
    from scipy import ndimage

    yy, xx = (np.mgrid[0:size, 0:size] / size).astype(np.float32)
    cx = 0.5 + rng.uniform(-0.05, 0.05)
    body = np.clip(1 - ((xx - cx) / rng.uniform(0.42, 0.5)) ** 2, 0, None) ** 0.5
    atten = 1.2 * body
    for side in (-1, 1):
        lx, ly = cx + side * rng.uniform(0.17, 0.22), rng.uniform(0.42, 0.5)
        lung = ((xx - lx) / rng.uniform(0.12, 0.16)) ** 2 + ((yy - ly) / rng.uniform(0.28, 0.34)) ** 2 < 1
        atten -= 0.8 * ndimage.gaussian_filter(lung.astype(np.float32), size / 80)
        for k in range(9):  # posterior ribs: arcs across each lung field
            arc = 0.18 + 0.075 * k + rng.uniform(-0.01, 0.01) + 0.15 * (xx - lx) ** 2 / 0.04
            atten += 0.25 * np.exp(-((yy - arc) / 0.012) ** 2) * (np.abs(xx - cx) < 0.4)
    atten += 1.5 * np.exp(-((xx - cx) / 0.045) ** 2)  # spine and mediastinum
    atten += 0.8 * np.exp(-(((xx - cx - 0.04) / 0.09) ** 2 + ((yy - 0.65) / 0.12) ** 2))  # heart
    signal = 1 - np.exp(-np.clip(atten, 0, None) * rng.uniform(0.8, 1.2))
    signal = ndimage.gaussian_filter(signal, rng.uniform(0.6, 1.5))
    return signal + rng.uniform(0.01, 0.03) * rng.standard_normal(signal.shape)


def _elbow(rng: np.random.Generator, size: int) -> np.ndarray:
    from bonedeploy.data.synth.config import SynthConfig
    from bonedeploy.data.synth.render import render_radiograph

    crop = max(128, size)  # the generator's smallest crop; smaller sizes are resized down
    image = render_radiograph(rng, bool(rng.random() < 0.5), SynthConfig(min_size=crop, max_size=crop,
                                                                         crop_size=crop))
    if crop == size:
        return image
    from PIL import Image

    return np.asarray(Image.fromarray(image).resize((size, size), Image.BILINEAR), np.float32)


def _inverted(rng: np.random.Generator, size: int) -> np.ndarray:
    return 1.0 - _elbow(rng, size)


def _blurred(rng: np.random.Generator, size: int) -> np.ndarray:
    from scipy import ndimage

    return ndimage.gaussian_filter(_elbow(rng, size), rng.uniform(6, 10))


def _noisy(rng: np.random.Generator, size: int) -> np.ndarray:
    return _elbow(rng, size) + rng.normal(0, rng.uniform(0.25, 0.4), (size, size))


for _name, _maker in (("blank", _blank), ("noise", _noise), ("gradient", _gradient), ("text", _text),
                      ("pattern", _pattern), ("chest", _chest), ("inverted", _inverted),
                      ("blurred", _blurred), ("noisy", _noisy)):
    register_kind(_name, _maker)
