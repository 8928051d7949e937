"""Client-side load at fixed concurrency, as Triton's perf_analyzer measures it: ``c`` closed-loop
clients, each sending its next request as soon as the last one returned. Latency is per request
as the client sees it; throughput is requests (x images per request) over the measured wall time.
Statistics go through ``bonedeploy.util.latency.summarize``, like every other bench number.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Any, Callable

from bonedeploy.util.latency import TimingStats, summarize
from bonedeploy.errors import ConfigError

Worker = Callable[[], Any]  # one request; raises on failure


@dataclass
class LoadResult:
    concurrency: int
    stats: TimingStats | None  # None when no request succeeded
    errors: int
    first_error: str | None = None
    mean_server_batch: float | None = None  # from Triton's statistics endpoint, when known

    @property
    def requests(self) -> int:
        return self.stats.iterations if self.stats else 0

    def to_dict(self) -> dict[str, Any]:
        return {"concurrency": self.concurrency, "errors": self.errors, "first_error": self.first_error,
                "mean_server_batch": self.mean_server_batch,
                "stats": self.stats.to_dict() if self.stats else None}


def parse_concurrency(text: str) -> tuple[int, ...]:
    try:
        levels = tuple(int(s) for s in str(text).replace(" ", "").split(",") if s)
    except ValueError:
        levels = ()
    if not levels or any(c < 1 for c in levels):
        raise ConfigError(f"--concurrency {text!r}: expected comma-separated positive integers, e.g. 1,4,8,16")
    return levels


def closed_loop(make_worker: Callable[[int], Worker], concurrency: int, duration_s: float,
                warmup_s: float = 0.5, images_per_request: int = 1) -> LoadResult:
    """Run ``concurrency`` threads for ``warmup_s + duration_s``; time only the last ``duration_s``."""
    workers = [make_worker(i) for i in range(concurrency)]  # clients connect before the clock starts
    start = time.perf_counter()
    measure_from, stop_at = start + warmup_s, start + warmup_s + duration_s
    latencies: list[list[float]] = [[] for _ in workers]
    errors = [0] * concurrency
    first_error: list[str] = []

    def loop(k: int) -> None:
        call = workers[k]
        while True:
            t0 = time.perf_counter()
            if t0 >= stop_at:
                return
            try:
                call()
            except Exception as e:  # noqa: BLE001 -- counted and reported, the load goes on
                if t0 >= measure_from:
                    errors[k] += 1
                if not first_error:
                    first_error.append(f"{type(e).__name__}: {' '.join(str(e).split())[:200]}")
                continue
            t1 = time.perf_counter()
            if t0 >= measure_from and t1 <= stop_at + 5.0:
                latencies[k].append(t1 - t0)

    threads = [threading.Thread(target=loop, args=(k,), daemon=True) for k in range(concurrency)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = max(time.perf_counter(), stop_at) - measure_from
    flat = [x for lst in latencies for x in lst]
    stats = summarize(flat, images_per_request, wall_s=wall) if flat else None
    return LoadResult(concurrency, stats, sum(errors), first_error[0] if first_error else None)


def server_batch_counts(client, model: str) -> tuple[int, int] | None:
    """(inferences, executions) so far, from Triton's statistics endpoint (gRPC or HTTP client);
    None where the server restricts that endpoint."""
    try:
        stats = client.get_inference_statistics(model_name=model, **({"as_json": True}
                                                                    if "grpc" in type(client).__module__ else {}))
    except Exception:  # noqa: BLE001 -- e.g. PyTriton's access-token restriction
        return None
    ms = (stats.get("model_stats") or [{}])[0]
    return int(ms.get("inference_count") or 0), int(ms.get("execution_count") or 0)
