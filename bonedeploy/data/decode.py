"""Decode + preprocess images in worker processes: the one pool, for training and for inference.

- ``decode_dataset``: every image of a training set once, into one preallocated array
  (``DecodedSet``); unreadable files are listed together (or left out with ``skip_bad``).
- ``BatchPrefetcher``: inference batches decoded ahead of the model, in input order. The consumer
  takes batch k while batches k+1 .. k+depth decode, so the model only waits when decoding is truly
  slower than inference. A decoder that crashes a worker process (a malicious file, an out-of-memory
  kill) costs that one image an ``error`` row: the pool is rebuilt and the batch retried image by
  image.

Both read each file with ``decode_file`` in pools from ``make_pool``. Torch-free (it runs on edge
boxes), and so are the workers.
"""

from __future__ import annotations

import math
import multiprocessing
import os
import threading
from collections import deque
from concurrent.futures import FIRST_COMPLETED, Executor, Future, ProcessPoolExecutor, ThreadPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Sequence

import numpy as np

from bonedeploy.data.imageio import read_image
from bonedeploy.data.preprocess import PreprocessSpec
from bonedeploy.errors import ConfigError, DataError, ImageReadError
from bonedeploy.ui.progress import Progress
from bonedeploy.util.machine import usable_cpus

__all__ = ["POOLS", "BatchPrefetcher", "DecodedBatch", "DecodedSet", "decode_batch", "decode_dataset",
           "decode_file", "default_workers", "make_pool"]

POOLS = ("process", "thread")
DECODER_NICE = 10  # relative to the model process
MAX_IN_FLIGHT_IMAGES = 2048  # bounds memory: ~1.3 GB of 1x400x400 float32 at most
# Imported once by the fork server, so each worker forked from it starts with them loaded.
WORKER_PRELOAD = ["bonedeploy.data.decode"]


def make_pool(workers: int, initializer: Callable[[], None] | None = None) -> ProcessPoolExecutor:
    """The decode process pool. Never fork: by the time we decode, the parent may run torch's
    thread pools or hold a CUDA context (``is_bf16_supported()`` initialises it), and a forked
    child inherits their locks in whatever state they were, which hangs or crashes it. A fork
    server (a clean process started before any of that matters, which forks the workers) starts
    workers fast; spawn, where there is none (macOS, Windows), is slower but as safe. Either way a
    worker imports only what its task needs (numpy, PIL), never torch."""
    if "forkserver" in multiprocessing.get_all_start_methods():
        ctx = multiprocessing.get_context("forkserver")
        ctx.set_forkserver_preload(WORKER_PRELOAD)  # only read when the server first starts
    else:
        ctx = multiprocessing.get_context("spawn")
    return ProcessPoolExecutor(workers, mp_context=ctx, initializer=initializer)


def decode_file(path: Path, spec: PreprocessSpec) -> tuple[np.ndarray | None, str | None]:
    """(preprocessed array, None), or (None, why it failed): never raises for one bad file."""
    try:
        return spec.apply(read_image(path)), None
    except ImageReadError as e:
        return None, e.cause
    except MemoryError:
        return None, "out of memory while decoding"
    except Exception as e:  # a bug or an odd file must not hide the other files' results
        return None, f"{type(e).__name__}: {e}"


def default_workers() -> int:
    """Inference: one core stays with the model runtime; at least one decoder, at most 8."""
    return max(1, min(8, usable_cpus() - 1))


# ---------------------------------------------------------------- decode-once cache (training)


@dataclass
class DecodedSet:
    x: np.ndarray  # N x C x H x W float32, preprocessed
    y: np.ndarray  # N int64
    paths: list[Path]  # root / relative path, aligned with x and y
    bad: list[tuple[Path, str]]  # files left out (skip_bad) with their cause

    def __len__(self) -> int:
        return len(self.paths)


def decode_dataset(root: str | Path, items: Iterable[Any], spec: PreprocessSpec,
                   workers: int | None = None, skip_bad: bool = False,
                   progress: Progress | None = None) -> DecodedSet:
    """Read and preprocess every image once (numpy path), in a process pool (``workers=1``: in
    this process; None: one per usable CPU).

    ``items``: (relative path, label) pairs (``FolderScan.items``) or manifest entries
    ({"path", "label", ...}). ``progress`` is started, advanced per image and left open (the
    caller owns it). Unreadable files raise one DataError listing every bad file and its cause,
    unless ``skip_bad``, which leaves them out and returns them in ``bad``.
    """
    root = Path(root)
    pairs = [_as_pair(it) for it in items]
    paths = [root / p for p, _ in pairs]
    y = np.fromiter((label for _, label in pairs), dtype=np.int64, count=len(pairs))
    x = np.empty((len(paths), *spec.input_shape), dtype=np.float32)  # preallocated once
    ok = np.zeros(len(paths), dtype=bool)
    bad: list[tuple[Path, str]] = []
    progress = progress or Progress()
    progress.start("decoding images", total=len(paths))
    for start, results in _decode_chunks(paths, spec, _dataset_workers(workers, len(paths))):
        for i, (arr, cause) in enumerate(results, start):
            if cause is None:
                x[i], ok[i] = arr, True
            else:
                bad.append((paths[i], cause))
        progress.advance(len(results))
    bad.sort(key=lambda b: b[0].as_posix())
    if bad and not skip_bad:
        lines = "\n".join(f"  {p}: {c}" for p, c in bad)
        raise DataError(f"{len(bad)} of {len(paths)} images under {root} could not be read "
                        f"(skip them with skip_bad / --skip-bad):\n{lines}")
    if bad:
        if not ok.any():
            raise DataError(f"none of the {len(paths)} images under {root} could be read")
        keep = np.flatnonzero(ok)
        for dst, src in enumerate(keep):  # compact in place, row by row: no second full array
            if dst != src:
                x[dst] = x[src]
        x, y = x[: len(keep)], y[keep]
        paths = [paths[i] for i in keep]
    return DecodedSet(x, y, paths, bad)


def _as_pair(item: Any) -> tuple[Path, int]:
    if isinstance(item, dict):
        return Path(item["path"]), int(item["label"])
    path, label = item
    return Path(path), int(label)


def _dataset_workers(requested: int | None, n: int) -> int:
    return max(1, min(int(usable_cpus() if requested is None else requested), n))


def _decode_chunks(paths: list[Path], spec: PreprocessSpec, workers: int) -> Iterator[tuple[int, list]]:
    """Yield (start index, [(array | None, cause | None), ...]) per chunk, as chunks finish."""
    total = len(paths)
    if workers <= 1:
        for i, path in enumerate(paths):
            yield i, [decode_file(path, spec)]
        return
    size = max(1, min(32, math.ceil(total / (workers * 4))))
    pool = make_pool(workers)
    try:
        pending = {pool.submit(_decode_chunk, paths[s : s + size], spec): s
                   for s in range(0, total, size)}
        while pending:
            finished, _ = wait(pending, return_when=FIRST_COMPLETED)
            for fut in finished:
                yield pending.pop(fut), fut.result()
    except BrokenProcessPool as e:
        raise DataError(f"an image-decoding worker died ({e}); "
                        "out of memory? retry with fewer workers (workers=1)") from e
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def _decode_chunk(paths: list[Path], spec: PreprocessSpec) -> list[tuple[np.ndarray | None, str | None]]:
    return [decode_file(p, spec) for p in paths]


# ---------------------------------------------------------------- prefetching batches (inference)


@dataclass
class DecodedBatch:
    paths: list[Path]
    x: np.ndarray  # decoded images only: n_ok x C x H x W float32
    ok: list[int] = field(default_factory=list)  # index in ``paths`` of each row of ``x``
    errors: dict[int, str] = field(default_factory=dict)  # index in ``paths`` -> cause


def decode_batch(paths: Sequence[Path], spec: PreprocessSpec) -> DecodedBatch:
    """Read and preprocess each file; a failure becomes an error entry, never an exception."""
    arrays, ok, errors = [], [], {}
    for i, p in enumerate(paths):
        arr, cause = decode_file(p, spec)
        if cause is None:
            arrays.append(arr)
            ok.append(i)
        else:
            errors[i] = cause
    x = np.stack(arrays) if arrays else np.zeros((0, *spec.input_shape), np.float32)
    return DecodedBatch(list(paths), x, ok, errors)


def _warm_up() -> None:
    """Makes the pool start its workers now (while the model loads), not at the first batch."""


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


def _make_prefetch_pool(kind: str, workers: int) -> Executor:
    if kind == "thread":
        return ThreadPoolExecutor(workers, thread_name_prefix="decode", initializer=_lower_priority)
    return make_pool(workers, initializer=_lower_priority)


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
            self._pool = _make_prefetch_pool(self.kind, self.workers)
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
                pending.append((i, self._submit(batches[i], spec)))

        fill()
        while pending:
            i, fut = pending.popleft()
            try:
                result = fut.result()
            except BrokenProcessPool:
                result = self._recover(batches, i, pending, spec)
            fill()  # refill before the consumer runs the model on ``result``
            yield result

    def _submit(self, batch: list[Path], spec: PreprocessSpec) -> Future:
        """Submit, or a future that fails like its batch would have: a worker may die between two
        submissions, and the pool then refuses new work; that batch is recovered in turn."""
        try:
            return self._pool.submit(decode_batch, batch, spec)
        except BrokenProcessPool as e:
            fut: Future = Future()
            fut.set_exception(e)
            return fut

    def _restart(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
        self._pool = _make_prefetch_pool(self.kind, self.workers)

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
            pending.append((j, self._submit(batches[j], spec)))
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
