"""Write a synthetic image-folder dataset: OUT/Fractured, OUT/Normal, optional OUT/test + key.

Image ``i`` is rendered from its own seed ``(config.seed, 1, i)`` and labels come from a seeded
permutation, so the bytes depend on the config alone, never on the worker count or order.
"""

from __future__ import annotations

import csv
import io
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from bonedeploy import CLASSES, POSITIVE_CLASS, __version__
from bonedeploy.errors import ConfigError
from bonedeploy.util.fs import atomic_write, write_json
from bonedeploy.data.synth.config import SYNTH_FORMAT, SynthConfig
from bonedeploy.data.synth.render import render_case
from bonedeploy.ui.progress import Progress

TEST_DIR = "test"
ANSWERS = "test_answers.csv"
MANIFEST = "synth.json"
NEGATIVE_CLASS = next(c for c in CLASSES if c != POSITIVE_CLASS)



@dataclass(frozen=True)
class Job:
    index: int
    label: str
    relpath: str  # relative to OUT


def image_rng(seed: int, index: int) -> np.random.Generator:
    """The generator of image ``index``: independent of every other image and of scheduling."""
    return np.random.default_rng([seed, 1, index])


def plan_jobs(config: SynthConfig) -> list[Job]:
    """Every image to write, labelled: an exact share of fractures, in a seeded order."""
    rng = np.random.default_rng([config.seed, 0])
    jobs = []
    for start, count, folder in ((0, config.n, None), (config.n, config.test_n, TEST_DIR)):
        n_pos = int(round(count * config.fractured_fraction))
        labels = np.array([POSITIVE_CLASS] * n_pos + [NEGATIVE_CLASS] * (count - n_pos))
        labels = labels[rng.permutation(count)]
        for j, label in enumerate(labels):
            i = start + j
            name = f"synth_{i:05d}{config.suffix}"
            jobs.append(Job(i, str(label), f"{folder or label}/{name}"))
    return jobs


def encode_image(image: np.ndarray, config: SynthConfig) -> bytes:
    """float HxW [0,1] -> PNG/JPEG bytes (8-bit L/RGB, or 16-bit I;16 over the full range)."""
    from PIL import Image

    if config.bit_depth == 16:
        pil = Image.fromarray(np.round(image * 65535.0).astype(np.uint16))
    else:
        arr = np.round(image * 255.0).astype(np.uint8)
        pil = Image.fromarray(np.repeat(arr[..., None], 3, axis=2) if config.rgb else arr)
    buf = io.BytesIO()
    if config.image_format == "jpeg":
        pil.save(buf, format="JPEG", quality=config.jpeg_quality)
    else:
        pil.save(buf, format="PNG", compress_level=3)  # noise barely compresses
    return buf.getvalue()


def _render_and_write(out: str, config: SynthConfig, job: Job) -> dict[str, Any]:
    image, info = render_case(image_rng(config.seed, job.index), job.label == POSITIVE_CLASS,
                              config)
    if config.image_format == "dicom":
        from bonedeploy.data.synth.dicom import encode_dicom

        data = encode_dicom(image, config.seed, job.index)
    else:
        data = encode_image(image, config)
    with atomic_write(Path(out) / job.relpath, "wb") as fh:
        fh.write(data)
    return {"path": job.relpath, "label": job.label, **info.to_dict()}


def _default_workers() -> int:
    from bonedeploy.util.machine import usable_cpus

    return usable_cpus()


def prepare_out(out: Path, overwrite: bool) -> None:
    """Refuse to mix with other files; with ``overwrite`` replace a previous synth output only."""
    if not out.exists() or not any(out.iterdir()):
        return
    if not overwrite:
        raise ConfigError(f"{out} is not empty; choose a new folder or pass --overwrite "
                          f"(which replaces a previous synth output there)")
    if not (out / MANIFEST).is_file():
        raise ConfigError(f"{out} is not empty and holds no {MANIFEST}: it is not a synth output, "
                          f"so --overwrite will not delete it; choose a new folder")
    for name in (*CLASSES, TEST_DIR):
        shutil.rmtree(out / name, ignore_errors=True)
    for name in (ANSWERS, MANIFEST):
        (out / name).unlink(missing_ok=True)


def generate_dataset(out: str | Path, config: SynthConfig, progress: Progress | None = None,
                     workers: int | None = None, overwrite: bool = False) -> dict[str, Any]:
    """Render and write every image of ``config`` under ``out``; returns a summary.

    Writes ``out/<label>/synth_NNNNN.<ext>``, with ``test_n`` also ``out/test/`` (no labels) and
    the answer key ``out/test_answers.csv`` (path relative to ``out/test``, label), and
    ``out/synth.json`` (config, counts, per-image metadata including each break's location).
    """
    out = Path(out)
    prepare_out(out, overwrite)
    jobs = plan_jobs(config)
    workers = max(1, min(workers or _default_workers(), len(jobs)))
    t0 = time.perf_counter()
    records = _run(str(out), config, jobs, workers, progress)
    elapsed = time.perf_counter() - t0
    tests = [r for r in records if r["path"].startswith(f"{TEST_DIR}/")]
    if tests:
        _write_answers(out / ANSWERS, tests)
    counts = {c: sum(1 for r in records if r["path"].startswith(f"{c}/")) for c in CLASSES}
    summary = {
        "out": str(out), "counts": counts, "test_n": len(tests),
        "answers": str(out / ANSWERS) if tests else None,
        "elapsed_s": round(elapsed, 3), "images_per_s": round(len(jobs) / max(elapsed, 1e-9), 2),
        "workers": workers,
    }
    write_json(out / MANIFEST, {"format": SYNTH_FORMAT, "bonedeploy_version": __version__,
                                "config": config.to_dict(), "counts": counts,
                                "test_n": len(tests), "images": records})
    return {**summary, "config": config.to_dict()}


def _run(out: str, config: SynthConfig, jobs: list[Job], workers: int,
         progress: Progress | None) -> list[dict[str, Any]]:
    from bonedeploy.data.decode import make_pool

    progress = progress or Progress()
    progress.start("rendering", len(jobs))
    records: list[dict[str, Any]] = []
    if workers == 1:
        for job in jobs:
            records.append(_render_and_write(out, config, job))
            progress.advance()
        return records
    chunk = max(1, min(8, len(jobs) // (4 * workers)))
    with make_pool(workers) as pool:  # the project's one pool policy: never fork
        for rec in pool.map(_render_and_write, [out] * len(jobs), [config] * len(jobs), jobs,
                            chunksize=chunk):
            records.append(rec)
            progress.advance()
    return records


def _write_answers(path: Path, tests: list[dict[str, Any]]) -> None:
    with atomic_write(path, "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["path", "label"])
        for rec in tests:
            writer.writerow([rec["path"][len(TEST_DIR) + 1:], rec["label"]])


def read_answers(path: str | Path) -> dict[str, str]:
    """The answer key as {path relative to the test folder: label}."""
    with open(path, newline="") as fh:
        return {row["path"]: row["label"] for row in csv.DictReader(fh)}
