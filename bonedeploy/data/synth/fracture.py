"""Fractures: where a break may go (inside the classifier's centre crop) and how it cuts a bone."""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from bonedeploy.data.preprocess import _center_crop_offsets
from bonedeploy.data.synth.anatomy import Bone, Pose, bones
from bonedeploy.data.synth.config import BreakPreset
from bonedeploy.data.synth.shapes import rot, shell, step, unit

MARGIN_PX = 10.0


@dataclass(frozen=True)
class Break:
    bone: str
    center: tuple[float, float]  # on the shaft axis, image px (x, y)
    axis: tuple[float, float]  # shaft direction at the break, away from the joint
    gap: float  # px
    displacement: float  # px, signed, across the shaft
    shortening: float  # px along the shaft (negative: fragments override)
    angulation_deg: float
    obliquity_deg: float
    lucency: float
    extent: float
    swelling: float  # px of extra soft tissue over the break
    corners: tuple[tuple[float, float], ...]  # ends of the line on both fragments, image px

    @property
    def normal(self) -> np.ndarray:
        """Unit normal of the fracture line, pointing to the fragment that moves."""
        return rot(np.asarray(self.axis), self.obliquity_deg)

    def moved(self, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Where a pixel of the displaced fragment came from on the intact bone."""
        a = np.asarray(self.axis)
        n = np.array([-a[1], a[0]])
        d = self.displacement * n + self.shortening * a
        px, py = x - self.center[0] - d[0], y - self.center[1] - d[1]
        t = np.deg2rad(-self.angulation_deg)
        c, s = np.cos(t), np.sin(t)
        return self.center[0] + c * px - s * py, self.center[1] + s * px + c * py


def safe_box(h: int, w: int, crop: int, margin: float) -> tuple[float, float, float, float]:
    """(x0, y0, x1, y1) of the pixels a centre crop keeps, shrunk by ``margin``."""
    def span(size: int) -> tuple[float, float]:
        _, _, start = _center_crop_offsets(size, crop)
        return start + margin, start + min(size, crop) - margin

    (x0, x1), (y0, y1) = span(w), span(h)
    return x0, y0, x1, y1


def crop_offsets(h: int, w: int, crop: int) -> tuple[int, int]:
    """(dx, dy) that map image px to centre-crop px (pad before minus crop start)."""
    (pt, _, top), (pl, _, left) = _center_crop_offsets(h, crop), _center_crop_offsets(w, crop)
    return pl - left, pt - top


def sample_break(rng: np.random.Generator, pose: Pose, preset: BreakPreset,
                 crop: int) -> tuple[Pose, Break] | None:
    """A random break, and the pose moved so that the break sits near the crop's centre.

    Framing the film on the injury keeps the whole line, on both fragments, inside the centre
    crop. Drawn for normal images too (and then not drawn into them), so that the framing and the
    pose never depend on the label. None when this pose leaves no room for one.
    """
    r = pose.r
    g = lambda lohi: float(rng.uniform(*lohi))  # noqa: E731
    gap, disp, ang = g(preset.gap) * r, g(preset.displacement) * r, g(preset.angulation_deg)
    obl, luc, ext = g(preset.obliquity_deg), g(preset.lucency), g(preset.extent)
    swelling = g(preset.swelling) * r
    disp *= rng.choice([-1.0, 1.0])
    ang *= rng.choice([-1.0, 1.0])
    obl *= rng.choice([-1.0, 1.0])
    shortening = float(rng.uniform(-0.25, 0.15)) * disp if ext >= 1.0 else 0.0
    if ext < 1.0:
        disp, ang = 0.0, 0.0  # an incomplete (greenstick/hairline) break does not move
    names = [name for name, _ in preset.bones]
    weights = np.array([w for _, w in preset.bones], dtype=float)
    order = rng.choice(names, size=len(names), replace=False, p=weights / weights.sum())
    site = g(preset.site)
    jitter = rng.uniform(-preset.framing, preset.framing, size=2) * min(crop, pose.h, pose.w)
    box = safe_box(pose.h, pose.w, crop, MARGIN_PX + gap / 2)
    target = np.array([(box[0] + box[2]) / 2, (box[1] + box[3]) / 2]) + jitter
    for name in order:
        lo, hi = bones(pose)[str(name)].breakable
        s = lo + site * (hi - lo)
        p0, p1 = (np.asarray(p) for p in bones(pose)[str(name)].shaft)
        moved = pose.shifted(target - (p0 + s * unit(p1 - p0)))
        brk = _make_break(bones(moved)[str(name)], s, gap, disp, shortening, ang, obl, luc, ext,
                          swelling)
        if all(box[0] <= x <= box[2] and box[1] <= y <= box[3] for x, y in brk.corners):
            return moved, brk
    return None


def _make_break(bone: Bone, s: float, gap: float, disp: float, shortening: float, ang: float,
                obl: float, luc: float, ext: float, swelling: float) -> Break:
    p0, p1 = (np.asarray(p) for p in bone.shaft)
    a = unit(p1 - p0)
    center = p0 + s * a
    line = rot(a, obl + 90.0)
    half = 1.2 * bone.rho / max(np.cos(np.deg2rad(obl)), 0.3)  # 1.2: the shaft flares a little
    ends = [center + sgn * half * line + off * rot(a, obl) for sgn in (-1, 1)
            for off in (-gap / 2, gap / 2)]
    brk = Break(bone=bone.name, center=(float(center[0]), float(center[1])),
                axis=(float(a[0]), float(a[1])), gap=gap, displacement=disp,
                shortening=shortening, angulation_deg=ang, obliquity_deg=obl, lucency=luc,
                extent=ext, swelling=swelling, corners=())
    moved = [_forward(brk, e) for e in ends]
    corners = tuple((float(x), float(y)) for x, y in ends + moved)
    return replace(brk, corners=corners)


def _forward(brk: Break, p: np.ndarray) -> np.ndarray:
    """Where a point of the moving fragment ends up (inverse of ``Break.moved``)."""
    a = np.asarray(brk.axis)
    n = np.array([-a[1], a[0]])
    c = np.asarray(brk.center)
    return c + rot(p - c, brk.angulation_deg) + brk.displacement * n + brk.shortening * a


def broken_shell(pose: Pose, bone: Bone, brk: Break, x: np.ndarray,
                 y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(cortex, medulla) path lengths of ``bone`` cut by ``brk``."""
    n = brk.normal
    line = np.array([-n[1], n[0]])
    cx, cy = brk.center
    f = (x - cx) * n[0] + (y - cy) * n[1]  # signed distance from the line
    t = (x - cx) * line[0] + (y - cy) * line[1]  # position along it
    half = bone.rho / max(np.cos(np.deg2rad(brk.obliquity_deg)), 0.3)
    # An incomplete crack starts at one cortex (which one follows the random obliquity sign).
    start = -half if brk.obliquity_deg >= 0 else half - brk.extent * 2 * half
    along = step(t - start) * step(start + brk.extent * 2 * half - t) * step(2 * half - np.abs(t))
    band = step(brk.gap / 2 - np.abs(f)) * along
    cortex, medulla = shell(bone.phi(pose, x, y), bone.rho, bone.cortex)
    if brk.extent < 1.0:
        keep = 1.0 - brk.lucency * band
        return cortex * keep, medulla * keep
    mx, my = brk.moved(x, y)
    far_c, far_m = shell(bone.phi(pose, mx, my), bone.rho, bone.cortex)
    fm = (mx - cx) * n[0] + (my - cy) * n[1]
    near = step(-f - brk.gap / 2) + (1.0 - brk.lucency) * band
    far = step(fm - brk.gap / 2)
    return cortex * near + far_c * far, medulla * near + far_m * far
