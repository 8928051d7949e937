"""Layer-by-layer error between two runs of the same model (numpy only: no torch, no onnx).

``LayerErrors`` is fed one batch at a time (the tensors of every paired layer, reference and
candidate), so a large model's activations never sit in memory for the whole set. Per layer:

- *accumulated* error: the candidate's tensor against the reference's, both run from the same
  input, so it holds everything upstream (onnxruntime's ``qdq_loss_debug`` calls it xmodel_err);
- *local* error: what this layer's own number format adds on its own. For a QDQ tensor, the
  candidate's float tensor against its own QuantizeLinear -> DequantizeLinear output (qdq_err);
  for a float16 tensor, the reference tensor against itself rounded to float16 (an overflow
  shows as -inf dB).

SQNR is 10 log10(signal power / noise power) over the whole set (``None``: no noise at all).
Every image also keeps its accumulated noise ratio per layer, so a flipped decision can be traced
to the layer where that image's error grew most.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np

LOCAL_QDQ = "qdq"
LOCAL_FP16 = "fp16 rounding"
DEFAULT_TOLERANCE_DB = 20.0  # accumulated SQNR below this: the signal is only 10x the noise


def sqnr_db(signal: float, noise: float) -> float | None:
    """10 log10(signal / noise); ``None`` when there is no noise, -inf for non-finite noise."""
    if not math.isfinite(noise):
        return -math.inf
    if noise <= 0:
        return None
    if signal <= 0:
        return -math.inf
    return 10.0 * math.log10(signal / noise)


@dataclass
class _Sums:
    """Running sums of one layer's comparison."""

    signal: float = 0.0
    noise: float = 0.0
    max_abs: float = 0.0
    sum_abs: float = 0.0
    count: int = 0
    cosines: list[float] = field(default_factory=list)
    nonfinite: int = 0  # images whose candidate tensor holds NaN/inf
    local_signal: float = 0.0
    local_noise: float = 0.0
    local_source: str | None = None
    local_channels: "ChannelNoise | None" = None


class LayerErrors:
    """Accumulates per-layer and per-image errors for ``names`` (network order), a batch of all
    layers at a time (``add``) or one layer over all batches at a time (``add_layer``)."""

    def __init__(self, names: Sequence[str]):
        self.names = list(names)
        self._sums = {n: _Sums() for n in self.names}
        self._image_nsr: dict[str, list[np.ndarray]] = {n: [] for n in self.names}  # per batch, in order

    def add(self, ref: dict[str, np.ndarray], cand: dict[str, np.ndarray],
            local: dict[str, tuple[np.ndarray, np.ndarray, str]] | None = None) -> None:
        """One batch: ``ref[name]``/``cand[name]`` N x ...; ``local[name]`` = (before, after, source)."""
        for name in self.names:
            self.add_layer(name, ref[name], cand[name], (local or {}).get(name))

    def add_layer(self, name: str, ref: np.ndarray, cand: np.ndarray,
                  local: tuple[np.ndarray, np.ndarray, str] | None = None) -> None:
        """The next batch of one layer (batches in the same order for every layer)."""
        self._image_nsr[name].append(self._add_layer(self._sums[name], ref, cand))
        if local is not None:
            self._add_local(self._sums[name], *local)

    @staticmethod
    def _add_layer(s: _Sums, ref: np.ndarray, cand: np.ndarray) -> np.ndarray:
        r = ref.reshape(len(ref), -1).astype(np.float64)
        c = cand.reshape(len(cand), -1).astype(np.float64)
        finite = np.isfinite(c).all(axis=1)
        err = np.where(np.isfinite(c), c - r, np.inf)
        sig, noise = (r * r).sum(axis=1), (err * err).sum(axis=1)
        s.signal += float(sig.sum())
        s.noise += float(noise.sum())
        absd = np.abs(err)
        s.max_abs = max(s.max_abs, float(absd.max()) if absd.size else 0.0)
        s.sum_abs += float(absd.sum())
        s.count += int(absd.size)
        s.nonfinite += int((~finite).sum())
        s.cosines += [_cosine(a, b) for a, b in zip(r, np.where(np.isfinite(c), c, 0.0))]
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.where(noise == 0, 0.0, np.where(sig > 0, noise / np.where(sig > 0, sig, 1), np.inf))

    @staticmethod
    def _add_local(s: _Sums, before: np.ndarray, after: np.ndarray, source: str) -> None:
        b, a = before.astype(np.float64), after.astype(np.float64)
        d = np.where(np.isfinite(a), a - b, np.inf)
        s.local_signal += float((b * b).sum())
        s.local_noise += float((d * d).sum())
        s.local_source = source
        s.local_channels = s.local_channels or ChannelNoise()
        s.local_channels.add(before, after)

    def image_nsr(self) -> np.ndarray:
        """Accumulated noise-to-signal ratio, images x layers (0: identical)."""
        if not self.names:
            return np.zeros((0, 0))
        return np.stack([np.concatenate(self._image_nsr[n]) for n in self.names], axis=1)

    def rows(self) -> list[dict[str, Any]]:
        """One dict per layer, network order: sqnr_db, max/mean abs error, cosine, local_sqnr_db."""
        out = []
        for name in self.names:
            s = self._sums[name]
            out.append({
                "layer": name,
                "sqnr_db": sqnr_db(s.signal, s.noise),
                "max_abs_err": s.max_abs,
                "mean_abs_err": s.sum_abs / s.count if s.count else 0.0,
                "cosine": float(np.mean(s.cosines)) if s.cosines else 1.0,
                "nonfinite_images": s.nonfinite,
                "local_sqnr_db": sqnr_db(s.local_signal, s.local_noise) if s.local_source else None,
                "local_channel_sqnr_db": s.local_channels.sqnr_db() if s.local_channels else None,
                "local_source": s.local_source,
            })
        return out


class ChannelNoise:
    """Noise-to-signal ratio of a (before, after) tensor pair per channel (axis 1), averaged over
    channels. A tensor-wide SQNR is ruled by its largest channel: one channel with a 1000x range
    sets the int8 scale, crushes every other channel to zero, and the tensor still reads a high
    SQNR; averaged per channel it reads near 0 dB. The repair ranks its candidates by this."""

    def __init__(self) -> None:
        self.signal: np.ndarray | None = None
        self.noise: np.ndarray | None = None

    def add(self, before: np.ndarray, after: np.ndarray) -> None:
        b = np.asarray(before, dtype=np.float64)
        a = np.asarray(after, dtype=np.float64)
        b = b.reshape(b.shape[0], b.shape[1] if b.ndim > 1 else 1, -1)
        a = a.reshape(b.shape)
        d = np.where(np.isfinite(a), a - b, np.inf)
        sig, noise = (b * b).sum(axis=(0, 2)), (d * d).sum(axis=(0, 2))
        if self.signal is None or self.signal.shape != sig.shape:
            self.signal, self.noise = sig, noise
        else:
            self.signal, self.noise = self.signal + sig, self.noise + noise

    def nsr(self) -> float:
        """Mean over channels of noise / signal (silent channels that stay silent are left out)."""
        if self.signal is None:
            return 0.0
        live = self.signal > 0
        dead_noisy = (~live) & (self.noise > 0)
        ratios = list(self.noise[live] / self.signal[live]) + [1.0] * int(dead_noisy.sum())
        return float(np.mean(ratios)) if ratios else 0.0

    def sqnr_db(self) -> float | None:
        return sqnr_db(1.0, self.nsr())


def _cosine(a: np.ndarray, b: np.ndarray) -> float:
    na, nb = float(np.linalg.norm(a)), float(np.linalg.norm(b))
    if na == 0 or nb == 0:
        return 1.0 if na == nb else 0.0
    return float(np.dot(a, b) / (na * nb))


def fp16_rounding(x: np.ndarray) -> np.ndarray:
    """``x`` as float16 would hold it (values past 65504 become inf)."""
    with np.errstate(over="ignore"):
        return x.astype(np.float16).astype(np.float32)


def first_crossing(rows: Sequence[dict[str, Any]], tolerance_db: float) -> dict[str, Any] | None:
    """The first layer whose accumulated SQNR is below ``tolerance_db`` (``None``: none is)."""
    for i, r in enumerate(rows):
        if r["sqnr_db"] is not None and r["sqnr_db"] < tolerance_db:
            return {"index": i, "layer": r["layer"], "sqnr_db": r["sqnr_db"]}
    return None


def divergence(nsr_row: np.ndarray, names: Sequence[str]) -> dict[str, Any] | None:
    """For one image: the layer where its accumulated relative error (sqrt NSR) grew most, from
    an identical input (error 0) on. The error is capped at the signal's size: past that the path
    has diverged, and later layers only scale a lost signal (a sign flip at the logits doubles it)."""
    if not len(names):
        return None
    rel = np.minimum(np.sqrt(np.asarray(nsr_row, dtype=np.float64)), 1.0)  # NaN (inf - inf) -> 1
    rel = np.where(np.isnan(rel), 1.0, rel)
    growth = np.diff(np.concatenate([[0.0], rel]))
    j = int(np.argmax(growth))
    before = None if j == 0 else _nsr_db(nsr_row[j - 1])
    return {"index": j, "layer": names[j], "sqnr_db_before": before, "sqnr_db": _nsr_db(nsr_row[j])}


def _nsr_db(nsr: float) -> float | None:
    return sqnr_db(1.0, float(nsr))
