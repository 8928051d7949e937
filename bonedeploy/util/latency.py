"""Latency statistics: percentiles, spread and throughput of timed iterations.

Shared by the benchmark (``bonedeploy.bench.timing.measure``) and the serve load generator, which
sits in the runtime and so must not import ``bonedeploy.bench``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

# trtexec warns above 1% on a dedicated GPU; a shared CPU box rarely gets under a few percent,
# so 10% is the line above which we call a measurement unreliable.
DEFAULT_CV_WARN = 0.10


@dataclass(frozen=True)
class TimingStats:
    """Latency per *batch* in milliseconds, throughput in images per second."""

    batch_size: int
    iterations: int
    warmup_iterations: int
    wall_s: float
    mean_ms: float
    min_ms: float
    max_ms: float
    p50_ms: float
    p90_ms: float
    p95_ms: float
    p99_ms: float
    std_ms: float
    cv: float
    images_per_s: float
    warning: str | None = None

    @property
    def ms_per_image(self) -> float:
        return self.mean_ms / self.batch_size

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "ms_per_image": self.ms_per_image}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "TimingStats":
        return cls(**{k: v for k, v in d.items() if k in cls.__dataclass_fields__})


def summarize(
    latencies_s: list[float] | np.ndarray,
    batch_size: int,
    *,
    wall_s: float | None = None,
    warmup_iterations: int = 0,
    cv_warn: float = DEFAULT_CV_WARN,
) -> TimingStats:
    """Percentiles, mean, spread and throughput of per-iteration latencies (seconds).

    Throughput is images over the wall time of the measured loop (trtexec's definition); when
    ``wall_s`` is not given it is the sum of the latencies.
    """
    lat = np.asarray(latencies_s, dtype=np.float64)
    if lat.size == 0:
        raise ValueError("no iterations to summarise")
    if batch_size <= 0:
        raise ValueError(f"batch_size must be positive, got {batch_size}")
    ms = lat * 1e3
    wall = float(wall_s if wall_s is not None else lat.sum())
    mean = float(ms.mean())
    std = float(ms.std(ddof=1)) if ms.size > 1 else 0.0
    cv = std / mean if mean > 0 else 0.0
    p50, p90, p95, p99 = (float(v) for v in np.percentile(ms, [50, 90, 95, 99]))
    warning = None
    if cv > cv_warn:
        warning = (f"unstable: CV {cv:.0%} > {cv_warn:.0%} over {ms.size} iterations; "
                   "measure longer (--duration) on a quiet machine")
    return TimingStats(
        batch_size=batch_size, iterations=int(ms.size), warmup_iterations=warmup_iterations,
        wall_s=wall, mean_ms=mean, min_ms=float(ms.min()), max_ms=float(ms.max()),
        p50_ms=p50, p90_ms=p90, p95_ms=p95, p99_ms=p99, std_ms=std, cv=cv,
        images_per_s=batch_size * ms.size / wall if wall > 0 else float("inf"),
        warning=warning,
    )
