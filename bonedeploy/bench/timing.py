"""Time-based measurement in the spirit of trtexec: warm up for a while, then time single
iterations until both a minimum duration and a minimum count are reached, and summarise them.

Each iteration is timed on the host clock *after* the backend's ``synchronize()``, so queued GPU
work is inside the number it belongs to (trtexec's "latency"; we do not split H2D/compute/D2H,
because a user of ``infer`` pays all of them).
"""

from __future__ import annotations

import time
from typing import Any, Callable

from bonedeploy.util.latency import DEFAULT_CV_WARN, TimingStats, summarize

DEFAULT_WARMUP_S = 0.2
DEFAULT_DURATION_S = 3.0
DEFAULT_MIN_ITERATIONS = 10


def measure(
    step: Callable[[], Any],
    batch_size: int,
    *,
    warmup_s: float = DEFAULT_WARMUP_S,
    duration_s: float = DEFAULT_DURATION_S,
    min_iterations: int = DEFAULT_MIN_ITERATIONS,
    max_iterations: int | None = None,
    synchronize: Callable[[], None] = lambda: None,
    cv_warn: float = DEFAULT_CV_WARN,
    clock: Callable[[], float] = time.perf_counter,
) -> TimingStats:
    """Warm up for ``warmup_s`` (at least one call), then time ``step(); synchronize()`` until
    ``duration_s`` has passed *and* ``min_iterations`` were timed (or ``max_iterations``)."""
    if duration_s < 0 or warmup_s < 0:
        raise ValueError("durations must be >= 0")
    min_iterations = max(1, int(min_iterations))
    warm = 0
    start = clock()
    while warm == 0 or clock() - start < warmup_s:
        step()
        synchronize()
        warm += 1
    latencies: list[float] = []
    begin = clock()
    while True:
        t0 = clock()
        step()
        synchronize()
        t1 = clock()
        latencies.append(t1 - t0)
        n = len(latencies)
        if max_iterations is not None and n >= max_iterations:
            break
        if n >= min_iterations and t1 - begin >= duration_s:
            break
    return summarize(latencies, batch_size, wall_s=clock() - begin, warmup_iterations=warm,
                     cv_warn=cv_warn)


__all__ = ["DEFAULT_CV_WARN", "DEFAULT_DURATION_S", "DEFAULT_MIN_ITERATIONS", "DEFAULT_WARMUP_S", "TimingStats",
           "measure", "summarize"]
