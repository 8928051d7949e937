"""The decode pool: the decode-once cache (training) and its worker processes.

Kept free of a top-level torch import: the workers import this module to run its functions.
"""

import os
import sys
from concurrent.futures.process import BrokenProcessPool

import numpy as np
import pytest
from imagekit import png

import bonedeploy.data.decode
from bonedeploy.data.decode import DecodedSet, decode_dataset, make_pool
from bonedeploy.data.folders import scan_image_folder
from bonedeploy.data.split import make_split
from bonedeploy.data.imageio import load_preprocessed
from bonedeploy.data.preprocess import PreprocessSpec
from bonedeploy.errors import DataError
from bonedeploy.ui.progress import Progress

SPEC = PreprocessSpec(crop_size=16)




class Counted(Progress):
    def __init__(self):
        self.starts, self.done = [], 0

    def start(self, description, total=None, done=0):
        self.starts.append(total)
        self.done = done

    def advance(self, n=1):
        self.done += n


@pytest.fixture
def labelled(tmp_path):
    root = tmp_path / "d"
    for i in range(5):
        png(root / "Fractured" / f"f{i}.png", 10 * i)
        png(root / "Normal" / f"n{i}.png", 10 * i + 5, size=(21, 9))
    return root


@pytest.mark.parametrize("workers", [1, 2])
def test_decode_dataset_matches_per_image_preprocessing(labelled, workers):
    scan = scan_image_folder(labelled)
    progress = Counted()
    data = decode_dataset(labelled, scan.items, SPEC, workers=workers, progress=progress)
    assert isinstance(data, DecodedSet) and len(data) == 10 and data.bad == []
    assert data.x.shape == (10, 1, 16, 16) and data.x.dtype == np.float32
    assert data.y.dtype == np.int64 and data.y.tolist() == [0] * 5 + [1] * 5
    assert data.paths == [labelled / p for p, _ in scan.items]
    for i, path in enumerate(data.paths):
        np.testing.assert_array_equal(data.x[i], load_preprocessed(path, SPEC))
    assert progress.starts == [10] and progress.done == 10


def test_decode_lists_every_bad_file_or_skips_them(labelled):
    (labelled / "Fractured" / "f1.png").write_bytes(b"")
    png_bytes = (labelled / "Normal" / "n3.png").read_bytes()
    (labelled / "Normal" / "n3.png").write_bytes(png_bytes[: len(png_bytes) // 2])
    split = make_split(scan_image_folder(labelled), val_fraction=0.2)
    items = split.train + split.val  # manifest entries (dicts) are accepted too
    with pytest.raises(DataError) as info:
        decode_dataset(labelled, items, SPEC, workers=2)
    msg = str(info.value)
    assert msg.splitlines()[0].startswith("2 of 10 images")
    assert f"{labelled / 'Fractured' / 'f1.png'}: empty file" in msg
    assert f"{labelled / 'Normal' / 'n3.png'}: truncated" in msg

    data = decode_dataset(labelled, items, SPEC, workers=2, skip_bad=True)
    assert len(data) == 8 and data.x.shape[0] == 8 and data.y.shape == (8,)
    assert [p.name for p, _ in data.bad] == ["f1.png", "n3.png"]
    bad_names = {"Fractured/f1.png", "Normal/n3.png"}
    assert data.paths == [labelled / e["path"] for e in items if e["path"] not in bad_names]
    for i, path in enumerate(data.paths):  # rows still line up with their paths
        np.testing.assert_array_equal(data.x[i], load_preprocessed(path, SPEC))
        assert data.y[i] == (0 if path.parent.name == "Fractured" else 1)


def test_decode_all_bad_is_an_error_even_when_skipping(tmp_path):
    for p, text in ((tmp_path / "A" / "a.png", ""), (tmp_path / "B" / "b.png", "junk")):
        p.parent.mkdir(parents=True)
        p.write_text(text)
    with pytest.raises(DataError, match="none of the 2 images"):
        decode_dataset(tmp_path, [("A/a.png", 0), ("B/b.png", 1)], SPEC, skip_bad=True)


def crashing_chunk(paths, spec):
    """Stands in for a decoder that kills its worker process (an out-of-memory kill)."""
    os._exit(13)


def test_a_dead_worker_is_a_data_error_that_keeps_its_cause(labelled, monkeypatch):
    monkeypatch.setattr(bonedeploy.data.decode, "_decode_chunk", crashing_chunk)
    with pytest.raises(DataError, match="worker died.*workers=1") as info:
        decode_dataset(labelled, scan_image_folder(labelled).items, SPEC, workers=2)
    assert isinstance(info.value.__cause__, BrokenProcessPool)


def torch_is_loaded() -> bool:
    return "torch" in sys.modules


def test_workers_never_import_torch_even_when_the_parent_has():
    """A forked worker would inherit the parent's torch (and its threads' locks); ours start clean."""
    torch = pytest.importorskip("torch")
    torch.ones(64, 64) @ torch.ones(64, 64)  # torch's intra-op thread pool is running
    with make_pool(1) as pool:
        assert pool.submit(torch_is_loaded).result(timeout=120) is False
    assert torch_is_loaded()
