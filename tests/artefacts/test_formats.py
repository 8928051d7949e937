"""Format tags are on-disk contracts: files written by earlier releases carry them, so moving a
module must never rename them (a reorganisation once did, and old checkpoints stopped loading)."""

import pytest

from bonedeploy.artefacts import checkpoint, sidecar
from bonedeploy.bench import results
from bonedeploy.data import preprocess, split
from bonedeploy.data.synth import config
from bonedeploy.export import results as export_results
from bonedeploy.infer import predictions

PUBLISHED = [
    (checkpoint, "FORMAT", "bonedeploy.checkpoint/1"),
    (sidecar, "SIDECAR_FORMAT", "bonedeploy.trt-sidecar/1"),
    (preprocess, "SPEC_FORMAT", "bonedeploy.preprocess/1"),
    (split, "SPLIT_FORMAT", "bonedeploy.split/1"),
    (config, "SYNTH_FORMAT", "bonedeploy.synth/1"),
    (predictions, "FORMAT_TAG", "bonedeploy.predictions/1"),
    (results, "RESULT_FORMAT", "bonedeploy.bench/1"),
    (export_results, "REPORT_FORMAT", "bonedeploy.export/1"),
]


@pytest.mark.parametrize("module, name, tag", PUBLISHED, ids=[p[2] for p in PUBLISHED])
def test_format_tag_is_the_published_one(module, name, tag):
    assert getattr(module, name) == tag


def test_a_spec_written_with_the_published_tag_reads_back():
    spec = preprocess.PreprocessSpec(crop_size=64)
    d = spec.to_dict()
    assert d["format"] == "bonedeploy.preprocess/1"
    assert preprocess.PreprocessSpec.from_dict(d) == spec
