"""Decode + preprocess image batches in a worker pool, ahead of the model, in input order.

The consumer (the model loop) takes batch k while batches k+1 .. k+depth decode, so the model only
waits when decoding is truly slower than inference. One task per batch keeps the IPC overhead per
image small. A decoder that crashes a worker process (a malicious file, an out-of-memory kill) costs
that one image an ``error`` row: the pool is rebuilt and the batch retried image by image.
Torch-free: it runs on edge boxes.
"""

from __future__ import annotations

import multiprocessing
import os
import threading
from collections import deque
from concurrent.futures import Executor, Future, ProcessPoolExecutor, ThreadPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np

from bonedeploy.errors import ConfigError, ImageReadError
from bonedeploy.data.preprocess import PreprocessSpec

POOLS = ("process", "thread")
DECODER_NICE = 10  # relative to the model process
MAX_IN_FLIGHT_IMAGES = 2048  # bounds memory: ~1.3 GB of 1x400x400 float32 at most


@dataclass
class DecodedBatch:
    paths: list[Path]
    x: np.ndarray  # decoded images only: n_ok x C x H x W float32
    ok: list[int] = field(default_factory=list)  # index in ``paths`` of each row of ``x``
    errors: dict[int, str] = field(default_factory=dict)  # index in ``paths`` -> cause


def decode_batch(paths: Sequence[Path], spec: PreprocessSpec) -> DecodedBatch:
    """Read and preprocess each file; a failure becomes an error entry, never an exception."""
    from bonedeploy.data.imageio import read_image

    arrays, ok, errors = [], [], {}
    for i, p in enumerate(paths):
        try:
            arrays.append(spec.apply(read_image(p)))
            ok.append(i)
        except ImageReadError as e:
            errors[i] = e.cause
        except MemoryError:
            errors[i] = "out of memory while decoding"
        except Exception as e:  # a preprocessing bug must not stop the other images
            errors[i] = f"{type(e).__name__}: {e}"
    x = np.stack(arrays) if arrays else np.zeros((0, *spec.input_shape), np.float32)
    return DecodedBatch(list(paths), x, ok, errors)


def _warm_up() -> None:
    import bonedeploy.data.imageio  # noqa: F401


def default_workers() -> int:
    """One core stays with the model runtime; at least one decoder, at most 8."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:
        cores = os.cpu_count() or 1
    return max(1, min(8, cores - 1))


def _lower_priority() -> None:
    """Decoders yield the CPU to the model: on a small CPU they then fill its idle gaps instead
    of slowing it down, and when they fall behind the model thread blocks, freeing the CPU.
    (On Linux, setpriority on a thread id affects only that thread.)"""
    try:
        if threading.current_thread() is threading.main_thread():
            os.nice(DECODER_NICE)
        else:
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), DECODER_NICE)
    except (OSError, AttributeError):
        pass


def _make_pool(kind: str, workers: int) -> Executor:
    if kind == "thread":
        return ThreadPoolExecutor(workers, thread_name_prefix="decode", initializer=_lower_priority)
    # forkserver: never fork a parent that may hold CUDA/torch threads.
    methods = multiprocessing.get_all_start_methods()
    ctx = multiprocessing.get_context("forkserver" if "forkserver" in methods else "spawn")
    return ProcessPoolExecutor(workers, mp_context=ctx, initializer=_lower_priority)


class BatchPrefetcher:
    """Decode batches ahead of the consumer, in order; ``workers=0`` decodes inline (no overlap).

    Use as a context manager: entering starts the workers (they import their modules while the
    caller loads the model; no file is read until ``iterate`` runs), leaving stops them.
    """

    def __init__(self, workers: int | None = None, pool: str = "process", depth: int | None = None):
        if pool not in POOLS:
            raise ConfigError(f"unknown decode pool {pool!r}; valid: {', '.join(POOLS)}")
        self.workers = default_workers() if workers is None else int(workers)
        if self.workers < 0:
            raise ConfigError(f"workers must be >= 0 (0 = decode in the main thread), got {workers}")
        self.kind = pool
        self.depth = depth
        self._pool: Executor | None = None

    def __enter__(self) -> "BatchPrefetcher":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def start(self) -> "BatchPrefetcher":
        if self.workers and self._pool is None:
            self._pool = _make_pool(self.kind, self.workers)
            for _ in range(self.workers):
                self._pool.submit(_warm_up)
        return self

    def iterate(self, batches: Sequence[Sequence[Path]], spec: PreprocessSpec) -> Iterator[DecodedBatch]:
        batches = [list(b) for b in batches]
        if self.workers == 0:
            for b in batches:
                yield decode_batch(b, spec)
            return
        self.start()
        biggest = max((len(b) for b in batches), default=1)
        depth = self.depth or max(2, min(self.workers + 2, MAX_IN_FLIGHT_IMAGES // max(biggest, 1)))
        pending: deque[tuple[int, Future]] = deque()
        todo = iter(range(len(batches)))

        def fill() -> None:
            while len(pending) < depth:
                i = next(todo, None)
                if i is None:
                    return
                pending.append((i, self._pool.submit(decode_batch, batches[i], spec)))

        fill()
        while pending:
            i, fut = pending.popleft()
            try:
                result = fut.result()
            except BrokenProcessPool:
                result = self._recover(batches, i, pending, spec)
            fill()  # refill before the consumer runs the model on ``result``
            yield result

    def _restart(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
        self._pool = _make_pool(self.kind, self.workers)

    def _recover(self, batches, i: int, pending: deque, spec: PreprocessSpec) -> DecodedBatch:
        """A worker died: retry batch ``i`` one image per task to find the culprit(s), then resubmit
        the batches that were in flight with it."""
        later = [j for j, _ in pending]
        pending.clear()
        self._restart()
        parts = []
        for p in batches[i]:
            try:
                parts.append(self._pool.submit(decode_batch, [p], spec).result())
            except BrokenProcessPool:
                self._restart()
                parts.append(DecodedBatch([p], np.zeros((0, *spec.input_shape), np.float32),
                                          errors={0: "the decoder process crashed on this file"}))
        for j in later:
            pending.append((j, self._pool.submit(decode_batch, batches[j], spec)))
        return _merge(parts, spec)

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None


def _merge(parts: list[DecodedBatch], spec: PreprocessSpec) -> DecodedBatch:
    paths, xs, ok, errors = [], [], [], {}
    for k, part in enumerate(parts):
        paths.extend(part.paths)
        xs.append(part.x)
        ok.extend(k for _ in part.ok)
        errors.update({k: c for c in part.errors.values()})
    x = np.concatenate(xs) if xs else np.zeros((0, *spec.input_shape), np.float32)
    return DecodedBatch(paths, x, ok, errors)
