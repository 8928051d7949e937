"""A lateral elbow: random pose, the soft-tissue envelope and the three bones as outline fields.

Everything is built from the condyle centre ``C`` and three unit vectors: ``a_h`` up the humerus,
``a_f`` along the forearm and their perpendiculars ``ant`` (the humerus's anterior side, where the
flexed forearm points) and ``up_f`` (the forearm's side facing the humerus). Lengths scale with
``r``, the humeral shaft radius in pixels, so anatomy keeps its proportions at every zoom.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np

from bonedeploy.data.synth.shapes import chain, circle, ellipse_field, rot, smin, unit


@dataclass
class Pose:
    h: int
    w: int
    r: float  # humeral shaft radius, px
    c: np.ndarray  # condyle centre
    a_h: np.ndarray
    a_f: np.ndarray
    rotation_deg: float
    flexion_deg: float
    mirrored: bool
    joint_gap: float  # px between condyle and forearm bones
    tissue: tuple[float, float]  # upper-arm and forearm soft-tissue radius, in r
    reach: float = field(init=False)  # segment length that runs off the image

    def __post_init__(self) -> None:
        self.reach = 2.5 * max(self.h, self.w)

    def shifted(self, offset: np.ndarray) -> "Pose":
        """The same arm moved by ``offset`` px (the film framed elsewhere)."""
        return replace(self, c=self.c + np.asarray(offset, dtype=float))

    @property
    def ant(self) -> np.ndarray:
        return unit(self.a_f - (self.a_f @ self.a_h) * self.a_h)

    @property
    def up_f(self) -> np.ndarray:
        return unit(self.a_h - (self.a_h @ self.a_f) * self.a_f)

    def at(self, along_h: float = 0.0, along_f: float = 0.0, ant: float = 0.0,
           up_f: float = 0.0) -> tuple[float, float]:
        """A point given offsets (in units of r) along the pose's axes from the condyle centre."""
        p = self.c + self.r * (along_h * self.a_h + along_f * self.a_f + ant * self.ant
                               + up_f * self.up_f)
        return float(p[0]), float(p[1])


def sample_pose(rng: np.random.Generator, h: int, w: int) -> Pose:
    r = float(np.sqrt(h * w) * rng.uniform(0.048, 0.066))
    rotation = float(rng.uniform(-35, 35))
    flexion = float(rng.uniform(72, 128))
    mirrored = bool(rng.random() < 0.5)
    sign = -1.0 if mirrored else 1.0
    a_h = rot(np.array([0.0, -1.0]), rotation)
    a_f = rot(a_h, -sign * flexion)  # canonical: humerus up, forearm to the left
    # Push the elbow away from both bones so that both shafts cross the frame, then jitter.
    away = -unit(a_h + a_f)
    size = min(h, w)
    c = (np.array([w / 2.0, h / 2.0]) + away * size * rng.uniform(0.02, 0.16)
         + rng.normal(0.0, 0.035 * size, 2))
    return Pose(h=h, w=w, r=r, c=c, a_h=a_h, a_f=a_f, rotation_deg=rotation, flexion_deg=flexion,
                mirrored=mirrored, joint_gap=float(r * rng.uniform(0.16, 0.3)),
                tissue=(float(rng.uniform(3.4, 4.3)), float(rng.uniform(2.9, 3.6))))


@dataclass(frozen=True)
class Bone:
    """A long bone: outline field, projected radius, cortical thickness and its breakable shaft."""

    name: str
    rho: float
    cortex: float
    shaft: tuple[tuple[float, float], tuple[float, float]]  # joint end -> far end of the shaft
    breakable: tuple[float, float]  # break centre range, px from the shaft's joint end

    def phi(self, pose: Pose, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        return BONE_FIELDS[self.name](pose, x, y)


def humerus_phi(p: Pose, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    r = p.r
    shaft = chain(x, y, [p.at(1.0, ant=-0.05), p.at(2.6, ant=-0.25), p.at(5.0, ant=-0.1),
                         _far(p, p.a_h, p.at(5.0, ant=-0.1))],
                  [1.35 * r, 1.12 * r, 0.98 * r, 0.9 * r], k=0.6 * r)
    condyle = circle(x, y, p.at(0.0), 1.02 * r)
    return smin(shaft, condyle, 0.7 * r)


def ulna_phi(p: Pose, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    r = p.r
    # Olecranon tip behind the condyle, round the bottom of the trochlear notch, then the shaft.
    body = chain(x, y, [p.at(0.55, along_f=-1.3), p.at(-0.5, along_f=-1.0),
                        p.at(along_f=1.2, up_f=-1.05), p.at(along_f=4.0, up_f=-0.9),
                        _far(p, p.a_f, p.at(along_f=4.0, up_f=-0.9), up=-0.1)],
                 [0.62 * r, 0.85 * r, 0.78 * r, 0.62 * r, 0.5 * r], k=0.5 * r)
    coronoid = circle(x, y, p.at(along_f=0.95, up_f=-0.6), 0.38 * r)
    body = smin(body, coronoid, 0.3 * r)
    return np.maximum(body, -circle(x, y, p.at(0.0), 1.02 * r + p.joint_gap))


def radius_phi(p: Pose, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    r = p.r
    head0 = 1.02 + p.joint_gap / r
    body = chain(x, y, [p.at(along_f=head0 + 0.25, up_f=0.4), p.at(along_f=head0 + 0.75, up_f=0.38),
                        p.at(along_f=head0 + 1.9, up_f=0.25), p.at(along_f=head0 + 3.5, up_f=0.2),
                        _far(p, p.a_f, p.at(along_f=head0 + 3.5, up_f=0.2), up=-0.2)],
                 [0.66 * r, 0.64 * r, 0.45 * r, 0.56 * r, 0.6 * r], k=0.35 * r)
    return np.maximum(body, -circle(x, y, p.at(0.0), 1.02 * r + p.joint_gap))


def olecranon_fossa(p: Pose, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """0..1 weight of the thin plate of bone above the condyle, which shows as a lucent oval."""
    e = ellipse_field(x, y, p.at(1.75, ant=-0.15), p.a_h, 0.75 * p.r, 0.42 * p.r)
    return np.sqrt(np.clip(e, 0.0, 1.0))


def _far(p: Pose, axis: np.ndarray, start: tuple[float, float], up: float = 0.0):
    """The shaft's far end, off the image, bent slightly by ``up`` (radians) toward up_f."""
    d = unit(axis + up * (p.up_f if axis is p.a_f else p.ant))
    end = np.asarray(start) + p.reach * d
    return float(end[0]), float(end[1])


BONE_FIELDS = {"humerus": humerus_phi, "ulna": ulna_phi, "radius": radius_phi}


def bones(p: Pose) -> dict[str, Bone]:
    r = p.r
    head0 = 1.02 + p.joint_gap / r
    return {
        "humerus": Bone("humerus", rho=1.05 * r, cortex=0.3 * r,
                        shaft=(p.at(2.6, ant=-0.25), p.at(5.0, ant=-0.1)),
                        breakable=(0.4 * r, 4.5 * r)),
        "ulna": Bone("ulna", rho=0.72 * r, cortex=0.21 * r,
                     shaft=(p.at(along_f=1.2, up_f=-1.05), p.at(along_f=4.0, up_f=-0.9)),
                     breakable=(1.4 * r, 5.5 * r)),
        "radius": Bone("radius", rho=0.6 * r, cortex=0.18 * r,
                       shaft=(p.at(along_f=head0 + 1.9, up_f=0.25),
                              p.at(along_f=head0 + 3.5, up_f=0.2)),
                       breakable=(0.6 * r, 5.0 * r)),
    }


def soft_tissue_phi(p: Pose, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Outline of the arm: upper arm and forearm cylinders with a filleted elbow crease."""
    r = p.r
    tu, tf = p.tissue
    upper = chain(x, y, [p.at(0.0, ant=0.6), _far(p, p.a_h, p.at(0.0, ant=0.6))],
                  [tu * r, 1.1 * tu * r], k=r)
    fore = chain(x, y, [p.at(along_f=0.3, up_f=0.2), _far(p, p.a_f, p.at(along_f=0.3, up_f=0.2))],
                 [tf * r, 0.8 * tf * r], k=r)
    return smin(upper, fore, 2.0 * r)
