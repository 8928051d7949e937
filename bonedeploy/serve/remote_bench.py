"""``bonedeploy bench --engine grpc://HOST:PORT/NAME --concurrency 1,4,8,16``: client-side latency
and throughput of a Triton-served model at several concurrency levels (perf_analyzer's closed
loop), the mean batch the server formed, and parity against a local reference when one is given.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from bonedeploy.errors import ConfigError
from bonedeploy.serve.loadgen import LoadResult, closed_loop, server_batch_counts
from bonedeploy.util.defaults import none_means_default

Log = Callable[[str], None]


@none_means_default  # None (the CLI's 'not given') means the default below
@dataclass(frozen=True)
class RemoteBenchConfig:
    engine: str
    concurrency: tuple[int, ...] = (1, 4, 8, 16)
    batch_size: int = 1  # images per request
    duration_s: float = 3.0
    warmup_s: float = 0.5
    reference: tuple[Path, ...] = ()  # local artefacts: parity of the remote model against the first
    data: Path | None = None
    parity_n: int | None = None
    json_path: Path | None = None

    def validate(self) -> None:
        if self.batch_size < 1:
            raise ConfigError(f"--batch-sizes for a remote engine: one size >= 1, got {self.batch_size}")
        if self.duration_s <= 0:
            raise ConfigError(f"--duration must be > 0, got {self.duration_s}")


@dataclass
class RemoteBenchReport:
    engine: str
    describe: dict[str, Any]
    batch_size: int
    levels: list[LoadResult] = field(default_factory=list)
    parity: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"engine": self.engine, "backend": self.describe, "batch_size": self.batch_size,
                "levels": [r.to_dict() for r in self.levels], "parity": self.parity}


def run_remote_bench(config: RemoteBenchConfig, log: Log | None = None) -> RemoteBenchReport:
    from bonedeploy.backends.triton import TritonBackend

    log = log or (lambda m: None)
    config.validate()
    with TritonBackend(config.engine) as probe:
        report = RemoteBenchReport(config.engine, probe.describe(), config.batch_size)
        if config.reference:
            report.parity = _parity(probe, config, log)
        shape = probe.card.preprocess.input_shape
        stats_client = probe._client
        for c in config.concurrency:
            before = server_batch_counts(stats_client, probe.model)
            r = closed_loop(_make_worker(config.engine, shape, config.batch_size), c, config.duration_s,
                            config.warmup_s, images_per_request=config.batch_size)
            after = server_batch_counts(stats_client, probe.model)
            if before and after and after[1] > before[1]:
                r.mean_server_batch = (after[0] - before[0]) / (after[1] - before[1])
            report.levels.append(r)
            s = r.stats
            log(f"concurrency {c}: " + (f"{s.images_per_s:.1f} img/s, p50 {s.p50_ms:.1f} ms, p99 "
                                        f"{s.p99_ms:.1f} ms" if s else "no request succeeded")
                + f", {r.errors} errors")
    if config.json_path:
        from bonedeploy.util.fs import write_json

        write_json(config.json_path, report.to_dict())
    return report


def _make_worker(url: str, shape, batch: int):
    from bonedeploy.backends.triton import TritonBackend

    def make(k: int):
        b = TritonBackend(url).load()  # one client (one connection) per simulated user
        x = np.random.default_rng(k).random((batch, *shape), dtype=np.float32)
        return lambda: b.infer(x)

    return make


def _parity(remote, config: RemoteBenchConfig, log: Log) -> dict[str, Any]:
    """The remote model against the first local reference, on the same parity images."""
    from bonedeploy.backends import open_backend
    from bonedeploy.eval import parity

    ref_path = Path(config.reference[0])
    ckpt = None
    if ref_path.suffix == ".pt":
        from bonedeploy.artefacts.checkpoint import load_checkpoint

        ckpt = load_checkpoint(ref_path)
    pset = parity.select_parity_set(ckpt, config.data, remote.card.preprocess, config.parity_n,
                                    classes=remote.card.classes)
    with open_backend(ref_path) as ref:
        ref_logits = parity.backend_logits(ref, pset)
    cand = parity.backend_logits(remote, pset)
    res = parity.compare(ref_logits, cand, pset.paths, remote.card.classes, labels=pset.labels)
    out = {**res.to_dict(), "reference": str(ref_path), "set": pset.describe()}
    log(f"parity vs {ref_path.name} on {len(pset)} {pset.kind} images: max |Δp| "
        f"{out.get('max_abs_dprob', float('nan')):.1e}, top-1 agreement {out.get('top1_agreement', 0):.1%}")
    return out


def render(report: RemoteBenchReport) -> str:
    lines = [f"{report.engine} ({report.describe.get('precision')}), {report.batch_size} image(s) per request",
             f"{'concurrency':>11} {'img/s':>8} {'p50 ms':>8} {'p99 ms':>8} {'mean batch':>10} {'errors':>6}"]
    for r in report.levels:
        s = r.stats
        mb = "–" if r.mean_server_batch is None else f"{r.mean_server_batch:.2f}"
        lines.append(f"{r.concurrency:>11} {s.images_per_s if s else 0:>8.1f} {s.p50_ms if s else 0:>8.1f} "
                     f"{s.p99_ms if s else 0:>8.1f} {mb:>10} {r.errors:>6}")
    return "\n".join(lines)

