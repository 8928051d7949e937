"""What the benchmark feeds the artefacts beyond the parity set (that one is
``bonedeploy.eval.parity.select_parity_set``, the export gate's): image files on disk for the
end-to-end mode, fixed-size batches for the compute mode."""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np

from bonedeploy.data.preprocess import PreprocessSpec
from bonedeploy.eval.parity import ParitySet


def _all_files(paths) -> bool:
    return bool(paths) and all(Path(p).is_file() for p in paths)


def image_files(inputs: ParitySet | None, data: Path | None, need: int,
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
