"""``bonedeploy infer --shard`` and ``bonedeploy merge`` as an array job runs them: one process per
index, ``--shard auto/N`` reading the index, then the merge or its one-line refusal."""

from __future__ import annotations

import csv

import numpy as np
import pytest
from PIL import Image

from clikit import run_cli
from onnxkit import tiny_onnx_classifier



@pytest.fixture
def archive(tmp_path):
    for i in range(9):
        cls = ("Fractured", "Normal")[i % 2]
        (tmp_path / "archive" / cls).mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.full((36, 36), 200 - 15 * i, np.uint8)).save(tmp_path / "archive" / cls / f"{i}.png")
    return tmp_path / "archive"


def test_an_indexed_job_then_merge(tmp_path, archive, capsys, monkeypatch):
    model = tiny_onnx_classifier(tmp_path / "m.onnx")
    for k in range(3):  # what each pod of a Kubernetes Indexed Job with completions: 3 runs
        monkeypatch.setenv("JOB_COMPLETION_INDEX", str(k))
        code, out, _ = run_cli(["infer", "-e", model, archive, "--shard", "auto/3", "-o", tmp_path / f"p-{k}.csv",
                                "-j", "0", "--quiet"], capsys)
        assert code == 0, out
    code, out, err = run_cli(["merge", *(tmp_path / f"p-{k}.csv" for k in range(2)), "-o", tmp_path / "p.csv"], capsys)
    assert code == 1 and "shard 2/3 missing" in err and len(err.strip().splitlines()) == 1, err
    code, out, _ = run_cli(["merge", *(tmp_path / f"p-{k}.csv" for k in range(3)), "-o", tmp_path / "p.csv"], capsys)
    assert code == 0 and out.startswith("merged 3 shards: 9 images (9 ok, 0 not)"), out
    with open(tmp_path / "p.csv", newline="") as fh:
        assert sorted(r["path"] for r in csv.DictReader(fh)) == sorted(str(p) for p in archive.rglob("*.png"))


def test_bad_shard_options_are_one_line(tmp_path, archive, capsys):
    code, _, err = run_cli(["infer", "-e", tmp_path / "m.onnx", archive, "--shard", "3/3"], capsys)
    assert code == 1 and "K must be in 0..2" in err
