"""``infer --shard K/N`` and ``merge``: a part from a hash of the relative path, stable whatever the
listing; three shards merged are exactly the unsharded run's rows; missing, incomplete and
mismatched shards are named."""

from __future__ import annotations

import csv
import json
import shutil

import numpy as np
import pytest
from PIL import Image

from bonedeploy.data.shard import Shard, listing_digest, parse_shard, shard_of
from bonedeploy.errors import ConfigError
from bonedeploy.infer.merge import MergeConfig, merge_predictions
from bonedeploy.infer.run import InferConfig, run_inference
from onnxkit import tiny_onnx_classifier

N = 3


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return tiny_onnx_classifier(tmp_path_factory.mktemp("m") / "tiny.onnx")


@pytest.fixture(scope="module")
def archive(tmp_path_factory):
    """15 labelled images in nested folders, and one unreadable file (an error row)."""
    root = tmp_path_factory.mktemp("arch") / "archive"
    rng = np.random.default_rng(0)
    for i in range(15):
        cls, level = ("Fractured", 190) if i % 2 else ("Normal", 60)
        path = root / cls / f"site{i % 3}" / f"img{i:02d}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.clip(rng.normal(level, 20, (40, 44)), 0, 255).astype(np.uint8)).save(path)
    (root / "Normal" / "broken.png").write_bytes(b"not a png")
    return root


def infer(model, archive, out, **kw):
    return run_inference(InferConfig(engine=model, inputs=(archive,), out=out, workers=0, batch_size=4, **kw))


def rows(path):
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


@pytest.fixture(scope="module")
def shards(model, archive, tmp_path_factory):
    out = tmp_path_factory.mktemp("shards")
    for k in range(N):
        infer(model, archive, out / f"preds-{k}.csv", shard=Shard(k, N))
    return out


def test_three_shards_merged_are_the_unsharded_runs_rows(model, archive, shards, tmp_path):
    whole = infer(model, archive, tmp_path / "whole.csv")
    sizes = [json.loads((shards / f"preds-{k}.csv.run.json").read_text())["shard"]["images"] for k in range(N)]
    assert sum(sizes) == whole.total == 16 and all(sizes), sizes  # every shard got some, none twice
    res = merge_predictions(MergeConfig(tuple(shards / f"preds-{k}.csv" for k in (2, 0, 1)), tmp_path / "m.csv"))
    assert (res.shards, res.images) == (N, 16)
    assert rows(tmp_path / "m.csv") == rows(tmp_path / "whole.csv")  # every column, in the same order
    record = json.loads((tmp_path / "m.csv.run.json").read_text())
    assert record["engine_sha256"] == json.loads((tmp_path / "whole.csv.run.json").read_text())["engine_sha256"]
    assert record["merged"]["count"] == N and len(record["merged"]["shards"]) == N


def test_the_part_depends_on_the_relative_path_only(archive, tmp_path):
    keys = ["Fractured/site1/img01.png", "Normal/site0/img00.png", "Normal/broken.png"]
    assert shard_of("Fractured/site1/img01.png", 3) == 2  # pinned: sha256 of the posix relative path, mod N
    assert [shard_of(k, 7) for k in keys] == [shard_of(k, 7) for k in list(keys)]
    assert listing_digest(keys) == listing_digest(reversed(keys))  # listing order does not matter
    moved = tmp_path / "elsewhere" / "mount"
    shutil.copytree(archive, moved)
    from bonedeploy.data.folders import list_images
    from bonedeploy.infer.shard import select

    here, there = (select(Shard(1, N), (root,), list_images(root)[0], tmp_path / "p.csv", tmp_path / "r.json", False)
                   for root in (archive, moved))
    assert [p.relative_to(archive) for p in here[0]] == [p.relative_to(moved) for p in there[0]]
    assert here[1]["inputs_sha256"] == there[1]["inputs_sha256"]
    counts = np.bincount([shard_of(f"Normal/img{i}.png", 4) for i in range(4000)], minlength=4)
    assert counts.min() > 900  # about a quarter each


def test_a_missing_shard_is_named_with_what_is_left_of_it(shards, tmp_path):
    with pytest.raises(ConfigError, match=r"shard 1/3 missing \(.*preds-1.csv exists: add it"):
        merge_predictions(MergeConfig((shards / "preds-0.csv", shards / "preds-2.csv"), tmp_path / "m.csv"))
    partial = tmp_path / "p"
    shutil.copytree(shards, partial)
    (partial / "preds-1.csv").rename(partial / "preds-1.csv.partial")
    gone = tmp_path / "gone"
    shutil.copytree(shards, gone, ignore=shutil.ignore_patterns("preds-1.*"))
    with pytest.raises(ConfigError, match=r"shard 1/3 missing \(no file of it given or found"):
        merge_predictions(MergeConfig((gone / "preds-0.csv", gone / "preds-2.csv"), tmp_path / "m.csv"))
    with pytest.raises(ConfigError, match=r"shard 1/3 missing \(preds-1.csv.partial: \d+ of \d+ images so far"):
        merge_predictions(MergeConfig((partial / "preds-0.csv", partial / "preds-2.csv"), tmp_path / "m.csv"))
    assert not (tmp_path / "m.csv").exists()


def test_an_incomplete_or_foreign_shard_is_refused(model, archive, shards, tmp_path):
    cut = tmp_path / "cut"
    shutil.copytree(shards, cut)
    lines = (cut / "preds-1.csv").read_text().splitlines(keepends=True)
    (cut / "preds-1.csv").write_text("".join(lines[:-1]))
    files = tuple(cut / f"preds-{k}.csv" for k in range(N))
    with pytest.raises(ConfigError, match=r"shard 1/3 \(.*preds-1.csv\) incomplete: \d+ of its \d+ images"):
        merge_predictions(MergeConfig(files, tmp_path / "m.csv"))
    other = tiny_onnx_classifier(tmp_path / "other.onnx", gain=4.0)
    infer(other, archive, cut / "preds-1.csv", shard=Shard(1, N))
    with pytest.raises(ConfigError, match=r"engine_sha256 differs: shard 0/3 .* vs shard 1/3"):
        merge_predictions(MergeConfig(files, tmp_path / "m.csv"))
    with pytest.raises(ConfigError, match="N differs"):
        infer(model, archive, cut / "four.csv", shard=Shard(0, 4))
        merge_predictions(MergeConfig((shards / "preds-0.csv", cut / "four.csv"), tmp_path / "m.csv"))
    with pytest.raises(ConfigError, match="shard 0 given twice"):
        shutil.copy(shards / "preds-0.csv", cut / "again.csv")
        shutil.copy(shards / "preds-0.csv.run.json", cut / "again.csv.run.json")
        merge_predictions(MergeConfig((shards / "preds-0.csv", cut / "again.csv"), tmp_path / "m.csv"))
    with pytest.raises(ConfigError, match="no shard record"):
        infer(model, archive, tmp_path / "plain.csv")
        merge_predictions(MergeConfig((tmp_path / "plain.csv",), tmp_path / "m.csv"))


def test_a_shard_resumes_as_itself_only(model, archive, shards, tmp_path):
    out = tmp_path / "preds-1.csv"
    lines = (shards / "preds-1.csv").read_text().splitlines(keepends=True)
    (tmp_path / "preds-1.csv.partial").write_text("".join(lines[:3]))  # killed after two rows
    shutil.copy(shards / "preds-1.csv.run.json", tmp_path / "preds-1.csv.run.json")
    res = infer(model, archive, out, shard=Shard(1, N), resume=True)
    assert res.resumed == 2 and rows(out) == rows(shards / "preds-1.csv")
    with pytest.raises(ConfigError, match="holds shard 1/3, not 2/3"):
        infer(model, archive, out, shard=Shard(2, N), resume=True)


def test_shard_needs_one_folder(model, archive, tmp_path):
    with pytest.raises(ConfigError, match="give one input folder, the archive root"):
        run_inference(InferConfig(engine=model, inputs=(archive / "Normal", archive / "Fractured"),
                                  out=tmp_path / "p.csv", workers=0, shard=Shard(0, 2)))


@pytest.mark.parametrize("text, env, expected", [
    ("2/8", {}, Shard(2, 8)),
    ("auto/8", {"JOB_COMPLETION_INDEX": "5"}, Shard(5, 8)),
    ("auto", {"SLURM_ARRAY_TASK_ID": "3", "SLURM_ARRAY_TASK_MIN": "0", "SLURM_ARRAY_TASK_MAX": "3",
              "SLURM_ARRAY_TASK_COUNT": "4"}, Shard(3, 4)),
    ("auto", {"SLURM_ARRAY_TASK_ID": "4", "SLURM_ARRAY_TASK_MIN": "1", "SLURM_ARRAY_TASK_MAX": "4",
              "SLURM_ARRAY_TASK_COUNT": "4"}, Shard(3, 4)),  # --array=1-4
    (None, {}, None),
])
def test_shard_forms(text, env, expected):
    assert parse_shard(text, env) == expected


@pytest.mark.parametrize("text, env, match", [
    ("8/8", {}, r"K must be in 0\.\.7"),
    ("3", {}, "expected K/N"),
    ("a/b", {}, "not a whole number"),
    ("auto", {}, "neither JOB_COMPLETION_INDEX"),
    ("auto", {"JOB_COMPLETION_INDEX": "1"}, "give --shard auto/N"),
    ("auto", {"SLURM_ARRAY_TASK_ID": "2", "SLURM_ARRAY_TASK_MIN": "0", "SLURM_ARRAY_TASK_MAX": "6",
              "SLURM_ARRAY_TASK_COUNT": "4"}, "steps or gaps"),
])
def test_bad_shards_are_refused(text, env, match):
    with pytest.raises(ConfigError, match=match):
        parse_shard(text, env)


def test_json_shards_merge_into_the_unsharded_runs_rows(model, archive, tmp_path):
    whole = tmp_path / "whole.json"
    infer(model, archive, whole)
    parts = [tmp_path / f"p-{k}.json" for k in range(2)]
    for k, part in enumerate(parts):
        infer(model, archive, part, shard=Shard(k, 2))
    merge_predictions(MergeConfig(tuple(parts), tmp_path / "m.json"))
    merged, ref = (json.loads(p.read_text()) for p in (tmp_path / "m.json", whole))
    assert merged["rows"] == ref["rows"] and merged["columns"] == ref["columns"]
    assert merged["format"] == ref["format"] and merged["merged"]["count"] == 2
    with pytest.raises(ConfigError, match="keeps their format"):
        merge_predictions(MergeConfig(tuple(parts), tmp_path / "m.csv"))
