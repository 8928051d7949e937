"""Render one synthetic lateral elbow radiograph (float HxW in [0,1]) and what was drawn."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from functools import lru_cache
from typing import Any

import numpy as np
from scipy import ndimage

from bonedeploy.data.synth.anatomy import bones, olecranon_fossa, sample_pose, soft_tissue_phi
from bonedeploy.data.synth.config import SynthConfig
from bonedeploy.data.synth.fracture import Break, broken_shell, crop_offsets, sample_break
from bonedeploy.data.synth.shapes import Grid, chord, shell

# Attenuation per pixel of path, divided by the humeral radius so contrast is zoom-independent.
MU_FAT, MU_MUSCLE, MU_CORTEX, MU_MEDULLA = 0.05, 0.045, 1.15, 0.3


@dataclass(frozen=True)
class RenderInfo:
    """What one rendered image contains; image coordinates are (x, y) pixels."""

    height: int
    width: int
    fractured: bool
    scale_px: float  # humeral shaft radius
    rotation_deg: float
    flexion_deg: float
    mirrored: bool
    marker: str | None = None
    marker_box: tuple[int, int, int, int] | None = None  # x0, y0, x1, y1
    bone: str | None = None
    break_center: tuple[float, float] | None = None
    # every end of the fracture line, on both fragments
    break_box: tuple[float, float, float, float] | None = None
    break_box_crop: tuple[float, float, float, float] | None = None  # same, in centre-crop pixels
    gap_px: float | None = None
    displacement_px: float | None = None
    angulation_deg: float | None = None
    obliquity_deg: float | None = None
    lucency: float | None = None
    extent: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return {k: _rounded(v) for k, v in asdict(self).items()}


def _rounded(v: Any) -> Any:
    if isinstance(v, (tuple, list)):
        return [_rounded(x) for x in v]
    return round(float(v), 2) if isinstance(v, (float, np.floating)) else v


def render_radiograph(rng: np.random.Generator, fractured: bool, config: SynthConfig) -> np.ndarray:
    """One radiograph as float32 H x W in [0,1] (see ``render_case`` for its metadata)."""
    return render_case(rng, fractured, config)[0]


def render_case(rng: np.random.Generator, fractured: bool,
                config: SynthConfig) -> tuple[np.ndarray, RenderInfo]:
    h, w = sample_size(rng, config)
    for _ in range(100):
        # Drawn for both labels so that nothing but the break itself depends on the label.
        framed = sample_break(rng, sample_pose(rng, h, w), config.preset, config.crop_size)
        if framed is not None:
            pose, brk = framed
            parts = bones(pose)
            break
    else:  # pragma: no cover - sizes are validated so that a pose with room always turns up
        raise RuntimeError(f"no pose leaves room for a break in a {w}x{h} image")
    look = _sample_look(rng)
    grid = Grid(h, w)
    atten = _attenuation(rng, pose, parts, brk if fractured else None, grid)
    image = _expose(atten, look, grid, pose.r)
    marker, box = _draw_marker(rng, image, config.marker_p)
    image = _degrade(rng, image, look)
    info = _info(pose, brk if fractured else None, marker, box, config.crop_size)
    return image, info


def sample_size(rng: np.random.Generator, config: SynthConfig) -> tuple[int, int]:
    """(height, width), each uniform in [min_size, max_size]: with the defaults about one image
    in seven has a side under 400 px, so the centre crop pads as well as crops."""
    h, w = rng.integers(config.min_size, config.max_size + 1, size=2)
    return int(h), int(w)


def _sample_look(rng: np.random.Generator) -> dict[str, float]:
    """Exposure, display curve and detector quality: the scanner-to-scanner variation."""
    return {
        "exposure": rng.uniform(0.75, 1.25), "gamma": rng.uniform(0.75, 1.35),
        "black": rng.uniform(0.0, 0.07), "white": rng.uniform(0.82, 1.0),
        "heel": rng.uniform(-0.18, 0.18), "heel_dir": rng.uniform(0, 2 * np.pi),
        "blur": rng.uniform(0.5, 1.4), "noise": rng.uniform(0.008, 0.03),
        "sharpen": rng.uniform(0.3, 1.0), "sharpen_sigma": rng.uniform(0.15, 0.3),
    }


def _attenuation(rng: np.random.Generator, pose, parts, brk: Break | None,
                 grid: Grid) -> np.ndarray:
    x, y, r = grid.x, grid.y, pose.r
    rho_t = 0.5 * (pose.tissue[0] + pose.tissue[1]) * r
    soft_phi = soft_tissue_phi(pose, x, y)
    if brk is not None and brk.swelling > 0:
        soft_phi = soft_phi - _swelling(brk, x, y, r)
    atten = (MU_FAT * chord(soft_phi, rho_t)
             + MU_MUSCLE * chord(soft_phi + 0.35 * rho_t, 0.65 * rho_t))
    texture = _trabecular_texture(rng, grid.h, grid.w, r)
    for name, bone in parts.items():
        if brk is not None and brk.bone == name:
            cortex, medulla = broken_shell(pose, bone, brk, x, y)
        else:
            cortex, medulla = shell(bone.phi(pose, x, y), bone.rho, bone.cortex)
        if name == "humerus":
            thin = 1.0 - 0.55 * olecranon_fossa(pose, x, y)
            cortex, medulla = cortex * thin, medulla * thin
        atten += MU_CORTEX * cortex + MU_MEDULLA * medulla * texture
    return atten / np.float32(r)


def _swelling(brk: Break, x: np.ndarray, y: np.ndarray, r: float) -> np.ndarray:
    """Outward push of the skin line (px) around the break: the haematoma over a fracture."""
    d2 = (x - brk.center[0]) ** 2 + (y - brk.center[1]) ** 2
    return brk.swelling * np.exp(-d2 / (2 * (2.5 * r) ** 2))


def _trabecular_texture(rng: np.random.Generator, h: int, w: int, r: float) -> np.ndarray:
    """A field around 1: the spongy bone's web seen through the thin cortex.

    Ridged band-passed noise (bright thin lines where the field crosses zero), made at half
    resolution because it is blurred anyway and the filters dominate the render time.
    """
    hh, hw = (h + 1) // 2, (w + 1) // 2
    noise = rng.standard_normal((hh, hw), dtype=np.float32)
    band = ndimage.gaussian_filter(noise, max(0.6, r / 22)) - ndimage.gaussian_filter(noise, r / 8)
    ridges = np.exp(-((band / (0.35 * band.std() + 1e-6)) ** 2))
    ridges = np.repeat(np.repeat(ridges, 2, axis=0), 2, axis=1)[:h, :w]
    return 0.7 + 0.6 * ndimage.uniform_filter(ridges, 2)


def _expose(atten: np.ndarray, look: dict[str, float], grid: Grid, r: float) -> np.ndarray:
    """Detector response, display curve and the unsharp masking every PACS applies."""
    d = np.cos(look["heel_dir"]) * (grid.x / grid.w - 0.5) + np.sin(look["heel_dir"]) * (
        grid.y / grid.h - 0.5)
    signal = 1.0 - np.exp(-atten * look["exposure"] * (1.0 + look["heel"] * d))
    signal = np.clip(signal, 0.0, 1.0) ** look["gamma"]
    smooth = ndimage.gaussian_filter(signal, look["sharpen_sigma"] * r)
    signal = signal + look["sharpen"] * (signal - smooth)
    signal = np.clip(signal, 0.0, 1.0)
    return (look["black"] + (look["white"] - look["black"]) * signal).astype(np.float32)


def _degrade(rng: np.random.Generator, image: np.ndarray, look: dict[str, float]) -> np.ndarray:
    """Detector blur, then quantum noise that grows with signal, then clipping."""
    image = ndimage.gaussian_filter(image, look["blur"])
    noise = rng.standard_normal(image.shape, dtype=np.float32)
    image = image + look["noise"] * np.sqrt(image + 0.05) * noise
    return np.clip(image, 0.0, 1.0).astype(np.float32)


def _draw_marker(rng: np.random.Generator, image: np.ndarray,
                 p: float) -> tuple[str | None, tuple[int, int, int, int] | None]:
    """A lead "R"/"L" side marker near an edge (radiopaque, so white), drawn in place."""
    from PIL import Image, ImageDraw

    show, letter = rng.random() < p, str(rng.choice(["R", "L"]))
    size_frac, corner = rng.uniform(0.09, 0.14), int(rng.integers(4))
    inset = rng.uniform(0.02, 0.07)
    boxed, level = rng.random() < 0.3, rng.uniform(0.85, 1.0)
    if not show:
        return None, None
    h, w = image.shape
    px = max(12, int(size_frac * min(h, w)))
    font = _font(px)
    canvas = Image.new("L", (w, h), 0)
    draw = ImageDraw.Draw(canvas)
    stroke = max(1, px // 16)  # lead letters are bold; a one-pixel stroke would blur away
    x0, y0, x1, y1 = draw.textbbox((0, 0), letter, font=font, stroke_width=stroke)
    tw, th = x1 - x0, y1 - y0
    mx, my = int(inset * w) + 4, int(inset * h) + 4
    left = mx if corner in (0, 2) else w - mx - tw
    top = my if corner in (0, 1) else h - my - th
    draw.text((left - x0, top - y0), letter, fill=255, font=font, stroke_width=stroke,
              stroke_fill=255)
    box = (left, top, left + tw, top + th)
    if boxed:
        pad = max(3, px // 5)
        box = (left - pad, top - pad, left + tw + pad, top + th + pad)
        draw.rectangle(box, outline=255, width=max(1, px // 12))
    mask = np.asarray(canvas, dtype=np.float32) / 255.0
    np.maximum(image, level * mask, out=image)
    return letter, tuple(int(v) for v in box)


@lru_cache(maxsize=64)
def _font(px: int):
    from PIL import ImageFont

    try:
        return ImageFont.load_default(size=px)
    except (TypeError, ImportError, OSError):  # Pillow without FreeType: the small bitmap font
        return ImageFont.load_default()


def _info(pose, brk: Break | None, marker, marker_box, crop: int) -> RenderInfo:
    base = dict(height=pose.h, width=pose.w, fractured=brk is not None, scale_px=pose.r,
                rotation_deg=pose.rotation_deg, flexion_deg=pose.flexion_deg,
                mirrored=pose.mirrored, marker=marker, marker_box=marker_box)
    if brk is None:
        return RenderInfo(**base)
    xs, ys = [c[0] for c in brk.corners], [c[1] for c in brk.corners]
    box = (min(xs), min(ys), max(xs), max(ys))
    dx, dy = crop_offsets(pose.h, pose.w, crop)
    return RenderInfo(**base, bone=brk.bone, break_center=brk.center, break_box=box,
                      break_box_crop=(box[0] + dx, box[1] + dy, box[2] + dx, box[3] + dy),
                      gap_px=brk.gap, displacement_px=brk.displacement,
                      angulation_deg=brk.angulation_deg, obliquity_deg=brk.obliquity_deg,
                      lucency=brk.lucency, extent=brk.extent)
