"""What the benchmark feeds the artefacts: the labelled parity set (the same images and code as
the export gate, ``bonedeploy.eval.parity``) and image files on disk for the end-to-end mode."""

from __future__ import annotations

import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from bonedeploy.data.preprocess import PreprocessSpec


@dataclass
class Inputs:
    x: np.ndarray                 # N x C x H x W float32, preprocessed
    labels: np.ndarray | None     # N int labels, or None when unlabelled
    paths: list[str]              # one name per image (flips are reported by it)
    source: dict[str, Any] = field(default_factory=dict)


def parity_set(spec: PreprocessSpec, ckpt: dict[str, Any] | None, data: Path | None,
               n: int | None) -> Inputs:
    """The checkpoint's validation images when their folder exists, else ``data``, else a
    synthetic set: exactly what ``bonedeploy export`` gates on."""
    from bonedeploy.eval import parity

    kwargs: dict[str, Any] = {"ckpt": ckpt, "data": data, "spec": spec}
    if n is not None:
        kwargs["n"] = n
    x, labels, paths = parity.parity_inputs(**kwargs)
    paths = [str(p) for p in paths]
    source = "data" if data else ("checkpoint validation split" if _all_files(paths) else "synthetic")
    return Inputs(np.ascontiguousarray(x, dtype=np.float32),
                  None if labels is None else np.asarray(labels, dtype=int), paths,
                  {"kind": source, "n": int(len(x)), "root": str(data) if data else _root(paths),
                   "labelled": labels is not None})


def _all_files(paths: list[str]) -> bool:
    return bool(paths) and all(Path(p).is_file() for p in paths)


def _root(paths: list[str]) -> str | None:
    files = [Path(p) for p in paths if Path(p).is_file()]
    if not files:
        return None
    import os

    return os.path.commonpath([str(f.parent) for f in files])


def image_files(inputs: Inputs | None, data: Path | None, need: int,
                workdir: tempfile.TemporaryDirectory | None = None) -> tuple[list[Path], str]:
    """Files for the end-to-end mode: the parity images when they are files, else ``--data``,
    else a few synthetic radiographs written to a temporary folder."""
    if inputs is not None and _all_files(inputs.paths):
        return [Path(p) for p in inputs.paths], "parity images"
    if data is not None:
        from bonedeploy.data.folders import list_images

        files, _ = list_images([data])
        if files:
            return list(files), str(data)
    if workdir is None:
        raise ValueError("no image files and no folder to write synthetic ones to")
    from bonedeploy.data.synth import SynthConfig, generate_dataset

    out = Path(workdir.name) / "synth"
    generate_dataset(out, SynthConfig(n=max(2, need), seed=0))
    from bonedeploy.data.folders import list_images

    files, _ = list_images([out])
    return list(files), "synthetic PNGs (temporary)"


def take(x: np.ndarray, batch_size: int) -> np.ndarray:
    """A batch of exactly ``batch_size`` images, cycling through ``x`` when it has fewer."""
    return np.ascontiguousarray(np.take(x, np.arange(batch_size) % len(x), axis=0))


class FileStream:
    """Batches of ``batch_size`` files decoded by infer's prefetch pool ahead of the model, as
    ``bonedeploy infer`` does; cycles through ``files`` and restarts the pool if it runs dry."""

    def __init__(self, files: list[Path], spec: PreprocessSpec, batch_size: int, batches: int,
                 workers: int | None = None):
        self.files, self.spec, self.batch_size = files, spec, batch_size
        self.batches, self.workers = batches, workers
        self._pos = 0
        self._it = None
        self._prefetcher = None

    def _plan(self) -> list[list[Path]]:
        out = []
        for _ in range(self.batches):
            out.append([self.files[(self._pos + k) % len(self.files)] for k in range(self.batch_size)])
            self._pos = (self._pos + self.batch_size) % len(self.files)
        return out

    def next_batch(self) -> np.ndarray:
        from bonedeploy.data.decode import BatchPrefetcher

        if self._prefetcher is None:
            self._prefetcher = BatchPrefetcher(self.workers).start()
        for _ in range(2):
            if self._it is None:
                self._it = self._prefetcher.iterate(self._plan(), self.spec)
            decoded = next(self._it, None)
            if decoded is not None:
                return decoded.x
            self._it = None
        raise RuntimeError("the prefetch pool yielded no batch")

    def close(self) -> None:
        if self._it is not None:
            self._it.close()
            self._it = None
        if self._prefetcher is not None:
            self._prefetcher.close()  # shuts the worker pool down
            self._prefetcher = None
