"""Vectorised 2-D signed-distance shapes and their X-ray path lengths.

A radiograph records how much matter a ray crosses. For a body of local radius rho whose outline
has signed distance ``phi`` (negative inside), a cylinder's chord ``2 sqrt(rho^2 - (rho + phi)^2)``
is a good projected thickness; a bone is a shell, so its cortex is the outer chord minus the chord
of the outline eroded by the cortical thickness. That one rule gives bright cortical rims along
every outline (shafts, condyles, articular surfaces) without drawing them.
"""

from __future__ import annotations

import numpy as np

Point = tuple[float, float]


class Grid:
    """Pixel-centre coordinates of an H x W image (x right, y down), float32."""

    def __init__(self, h: int, w: int):
        self.h, self.w = h, w
        self.y, self.x = np.mgrid[0:h, 0:w].astype(np.float32)


def unit(v: np.ndarray) -> np.ndarray:
    return v / np.linalg.norm(v)


def rot(v: np.ndarray, deg: float) -> np.ndarray:
    """Rotate a 2-vector by ``deg`` degrees (on screen, y down, positive turns clockwise)."""
    t = np.deg2rad(deg)
    c, s = np.cos(t), np.sin(t)
    return np.array([c * v[0] - s * v[1], s * v[0] + c * v[1]])


def tapered_segment(x: np.ndarray, y: np.ndarray, a: Point, b: Point, ra: float,
                    rb: float) -> np.ndarray:
    """Approximate SDF of a capsule from ``a`` to ``b`` whose radius goes linearly ra -> rb."""
    ax, ay = a
    dx, dy = b[0] - ax, b[1] - ay
    px, py = x - ax, y - ay
    t = np.clip((px * dx + py * dy) / (dx * dx + dy * dy), 0.0, 1.0)
    ex, ey = px - t * dx, py - t * dy
    return np.sqrt(ex * ex + ey * ey) - (ra + (rb - ra) * t)


def chain(x: np.ndarray, y: np.ndarray, points: list[Point], radii: list[float],
          k: float) -> np.ndarray:
    """A smooth union of tapered segments through ``points`` (one radius per point)."""
    phi = tapered_segment(x, y, points[0], points[1], radii[0], radii[1])
    for i in range(1, len(points) - 1):
        phi = smin(phi, tapered_segment(x, y, points[i], points[i + 1], radii[i], radii[i + 1]), k)
    return phi


def circle(x: np.ndarray, y: np.ndarray, c: Point, r: float) -> np.ndarray:
    return np.sqrt((x - c[0]) ** 2 + (y - c[1]) ** 2) - r


def ellipse_field(x: np.ndarray, y: np.ndarray, c: Point, axis: np.ndarray, a: float,
                  b: float) -> np.ndarray:
    """1 - (u/a)^2 - (v/b)^2 in the ellipse's frame (positive inside); ``axis`` points along a."""
    px, py = x - c[0], y - c[1]
    u = px * axis[0] + py * axis[1]
    v = -px * axis[1] + py * axis[0]
    return 1.0 - (u / a) ** 2 - (v / b) ** 2


def smin(a: np.ndarray, b: np.ndarray, k: float) -> np.ndarray:
    """Polynomial smooth minimum: a union whose joins are filleted over ~k pixels."""
    h = np.clip(0.5 + 0.5 * (b - a) / k, 0.0, 1.0)
    return b + (a - b) * h - k * h * (1.0 - h)


def chord(phi: np.ndarray, rho: float) -> np.ndarray:
    """Projected thickness of a body with outline SDF ``phi`` and local radius ``rho``."""
    depth = np.clip(-phi, 0.0, rho)
    return 2.0 * np.sqrt(depth * (2.0 * rho - depth))


def shell(phi: np.ndarray, rho: float, cortex: float) -> tuple[np.ndarray, np.ndarray]:
    """(cortical, medullary) path lengths of a hollow bone of radius ``rho``."""
    outer = chord(phi, rho)
    inner = chord(phi + cortex, rho - cortex)
    return outer - inner, inner


def step(v: np.ndarray) -> np.ndarray:
    """Anti-aliased indicator of v > 0 (one-pixel ramp)."""
    return np.clip(v + 0.5, 0.0, 1.0)
