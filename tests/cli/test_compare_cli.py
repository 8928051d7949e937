"""``bonedeploy compare`` on the command line: the per-layer table at 80 columns with every layer
name whole, the flipped decisions, the files written, and bad input on one line. Cheap: two tiny
hand-made ONNX classifiers (tests/onnxkit.py) that differ in their gain."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from exportkit import make_tree
from onnxkit import tiny_card, tiny_onnx_classifier

pytest.importorskip("onnx")

from bonedeploy.cli.app import app  # noqa: E402

WIDTH = 80


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    base = tmp_path_factory.mktemp("cmp")
    card = tiny_card(crop=32)
    ref = tiny_onnx_classifier(base / "model.onnx", card, gain=8.0)
    cand = tiny_onnx_classifier(base / "model.other.onnx", card.with_(precision="int8"), gain=-8.0)
    return ref, cand, make_tree(base / "data", per_class=4)


def test_compare_prints_layers_whole_at_80_columns_and_traces_flips(pair, tmp_path):
    ref, cand, data = pair
    r = CliRunner().invoke(app, ["compare", str(ref), str(cand), "--data", str(data), "--out", str(tmp_path / "c"),
                                 "--tolerance", "10"], env={"COLUMNS": str(WIDTH)})
    assert r.exit_code == 0, r.output
    assert "…" not in r.output and max(len(line) for line in r.output.splitlines()) <= WIDTH
    for name in ("pooled", "flat", "mm", "logits"):  # no module map: the graph's tensors, whole
        assert f" {name} " in r.output
    text = " ".join(r.output.split())  # the sentences as written, wherever the terminal wrapped them
    assert "first layer below 10 dB: mm" in text
    assert "agreement 0.0% on 8 images, 8 flip(s)" in text
    assert "F000.png" in text and "diverges at" in text
    report = json.loads((tmp_path / "c" / "compare.json").read_text())
    assert report["first_crossing"]["layer"] == "mm" and len(report["flips"]) == 8
    assert all(f["diverges_at"]["layer"] == "mm" for f in report["flips"])
    assert f"report: {tmp_path / 'c' / 'compare.json'}" in r.output.replace("\n", "")  # a path: folded, not cut


def test_bad_input_is_one_line_naming_the_file(pair, tmp_path):
    ref, _, _ = pair
    r = CliRunner().invoke(app, ["compare", str(ref), str(tmp_path / "missing.onnx")])
    assert r.exit_code == 1
    assert isinstance(r.exception, Exception) and "missing.onnx: no such file" in str(r.exception)
