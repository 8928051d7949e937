"""Mixed precision at export: the search repairs the planted model with the fewest float nodes,
leaves a healthy model untouched, records what it did, and says what it tried when nothing passes."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from bonedeploy.errors import ConfigError
from precisionkit import HAS_OPENVINO, brightness_weights, export_outlier, plant, register_outlier
from bonedeploy.export.precision import DEFAULT_CALIBRATION, QuantOptions
from bonedeploy.export.repair import (FAILED, REPAIRED, Attempt, Fp16Recipe, RepairConfig, Search, choose,
                                      repair_summary, search_islands)

PLANTED_ISLAND = {"node_conv2d", "node_relu", "node_max_pool2d"}  # conv 0 -> ReLU -> MaxPool (planted)


# --- the search, with a stand-in gate (no model: it tests the search order and budget only) ---
def fake_check(needed: set[str], cheap_recipe: tuple[str, bool] | None = None, calls: list | None = None):
    """A gate that passes when every ``needed`` node is float, or for ``cheap_recipe``."""
    def check(recipe):
        nodes = set(recipe.float_nodes)
        key = (getattr(recipe, "calibration", None), getattr(recipe, "per_channel", None))
        ok = needed <= nodes or (key == cheap_recipe and not nodes)
        if calls is not None:
            calls.append(recipe)
        a = Attempt(recipe.label(), recipe.describe(), ok, [] if ok else ["flips"], 1.0 if ok else 0.9,
                    None, 0 if ok else 2, 0, 0.0, 0.0)
        return a, Path("/nonexistent/candidate.onnx")
    return check


def first_attempt() -> tuple[Attempt, Path]:
    return Attempt("plain", QuantOptions().describe(), False, ["flips"], 0.9, None, 2, 1, 0.0, 0.0), Path("/x")


def ranking(*nodes: str) -> list[dict]:
    return [{"node": n, "op": "Conv", "layer": n, "score": 1.0 / (i + 1)} for i, n in enumerate(nodes)]


def test_islands_find_the_fewest_nodes_by_doubling_bisection_and_pruning():
    ranked = ["a", "x1", "b", "x2", "x3", "c", "d"]
    search = Search(fake_check({"a", "b", "c"}), 20, lambda m: None, first_attempt())
    found = search_islands(search, QuantOptions(), ranked)
    assert found is not None and found.passed
    assert set(found.recipe["float_nodes"]) == {"a", "b", "c"}  # x1..x3 pruned away again
    sizes = [len(a.recipe["float_nodes"]) for a in search.attempts[1:]]
    assert sizes[:4] == [1, 2, 4, 7]  # doubling up to the first prefix that passes
    assert sizes[4:6] == [5, 6]  # then bisection between 4 (fails) and 7 (passes)
    assert sizes[6:] == [5, 4, 3, 3, 2]  # then each node but the last is dropped if it still passes


def test_search_stops_at_its_budget_and_reports_why():
    search = Search(fake_check({"z"}), 3, lambda m: None, first_attempt())
    assert search_islands(search, QuantOptions(), ["a", "b", "c", "d", "e"]) is None
    assert len(search.attempts) == 4 and search.stopped == "check budget spent: 3"
    timed = Search(fake_check({"a"}), 10, lambda m: None, first_attempt(), deadline=0.0)
    assert search_islands(timed, QuantOptions(), ["a"]) is None and timed.stopped == "time budget spent"


def test_a_calibration_recipe_that_passes_beats_float_islands():
    search = Search(fake_check({"a"}, cheap_recipe=("Entropy", True)), 20, lambda m: None, first_attempt())
    result = choose(search, "int8", QuantOptions(), lambda base: ranking("a", "b"), RepairConfig(time_ratio=None))
    assert result.status == REPAIRED
    assert result.chosen.recipe == {"calibration_method": "Entropy", "per_channel": True, "float_nodes": []}
    assert result.kept_float == []
    labels = [a.label for a in result.attempts]
    assert labels[2] == f"{DEFAULT_CALIBRATION} per-tensor"  # first: the recipe needing no new calibration


def test_an_island_that_costs_little_speed_ends_the_search():
    calls: list = []
    search = Search(fake_check({"a"}, cheap_recipe=("Entropy", True), calls=calls), 20, lambda m: None,
                    first_attempt())
    result = choose(search, "int8", QuantOptions(), lambda base: ranking("a", "b"), RepairConfig(time_ratio=None),
                    speed=lambda a: 0.97)
    assert result.status == REPAIRED and result.chosen.recipe["float_nodes"] == ["a"]
    assert len(calls) == 1 and "calibration recipes not tried" in result.stopped
    slow = Search(fake_check({"a"}, cheap_recipe=("Entropy", True)), 20, lambda m: None, first_attempt())
    result = choose(slow, "int8", QuantOptions(), lambda base: ranking("a", "b"), RepairConfig(time_ratio=None),
                    speed=lambda a: 0.5)
    assert result.chosen.recipe["calibration_method"] == "Entropy" and result.chosen.recipe["float_nodes"] == []


def test_fp16_search_has_no_calibration_stage():
    calls: list = []
    search = Search(fake_check({"b"}, calls=calls), 20, lambda m: None, first_attempt())
    result = choose(search, "fp16", Fp16Recipe(), lambda base: ranking("a", "b", "c"),
                    RepairConfig(time_ratio=None, max_float_fraction=1.0))
    assert result.status == REPAIRED and result.chosen.recipe == {"fp32_nodes": ["b"]}
    assert all(isinstance(r, Fp16Recipe) for r in calls)
    assert [k["node"] for k in result.kept_float] == ["b"]


def test_repair_config_parses_the_command_line_and_lists_valid_choices():
    assert RepairConfig.parse(None).precisions == ("int8",)
    assert RepairConfig.parse("off").precisions == ()
    assert RepairConfig.parse("fp16,INT8").precisions == ("fp16", "int8")
    with pytest.raises(ConfigError, match="valid: off, fp16, int8"):
        RepairConfig.parse("bf16")
    with pytest.raises(ConfigError, match="valid: MinMax, Entropy, Percentile"):
        RepairConfig(calibrations=("KL",))


def test_summary_lists_what_was_tried_when_nothing_passed():
    a = Attempt("MinMax per-channel", {}, False, ["top-1 agreement 50.0% < 98%"], 0.5, 0.5, 20, 20, 0.4, 1.0)
    lines = repair_summary("model.int8.onnx", {"status": FAILED, "checks": 1, "stopped": "time budget spent",
                                               "attempts": [a.to_dict()]})
    assert lines[0] == "model.int8.onnx: no repair passed its gate (1 check(s), time budget spent); tried:"
    assert "MinMax per-channel: agreement 50.0%, 20 decision flip(s); top-1 agreement 50.0% < 98%" in lines[1]


# --- the real thing: the planted tiny_outlier model (tests/precisionkit.py) ---
def int8_file(result):
    return next(f for f in result.files if f.kind == "onnx" and f.precision == "int8")


def card_of(path: Path):
    import onnx

    from bonedeploy.export import onnx as ox

    return ox.read_card(onnx.load(str(path)))


def test_plain_int8_of_the_planted_model_fails_its_gate(planted_plain):
    f = int8_file(planted_plain)
    assert not f.passed and f.repair is None
    assert f.parity["op_missed_positives"] > 0  # detected fractures flip to normal
    assert card_of(f.path).extra["quantization"] == {"calibration_method": DEFAULT_CALIBRATION, "per_channel": True,
                                                     "float_nodes": []}


def test_the_search_repairs_the_planted_model_with_a_float_island(planted_repaired):
    f = int8_file(planted_repaired)
    assert f.passed and f.parity["op_missed_positives"] == 0 and f.parity["top1_agreement"] == 1.0
    rep = f.repair
    assert rep["status"] == REPAIRED
    kept = [k["node"] for k in rep["kept_float"]]
    assert kept and set(kept) <= PLANTED_ISLAND  # only the planted block, nothing downstream
    for k in rep["kept_float"]:  # why: its own rounding's error, per channel (the crushed channels)
        assert k["local_channel_sqnr_db"] < 3.0 and k["layer"] in ("0", "1", "2")
    assert rep["attempts"][0]["label"] == f"{DEFAULT_CALIBRATION} per-channel" and not rep["attempts"][0]["passed"]
    assert rep["throughput"]["ratio"] > 0 and rep["throughput"]["batch"] == 8
    report = json.loads(planted_repaired.report.read_text())
    assert next(x for x in report["files"] if x["path"] == "model.int8.onnx")["repair"]["kept_float"] == rep["kept_float"]


def test_the_repaired_file_is_an_ordinary_int8_file_whose_card_says_how_it_was_made(planted_repaired):
    import onnx

    f = int8_file(planted_repaired)
    assert f.path.name == "model.int8.onnx" and not list(f.path.parent.glob("repair-*"))
    card = card_of(f.path)
    kept = [k["node"] for k in f.repair["kept_float"]]
    assert card.precision == "int8" and card.extra["quantization"]["float_nodes"] == kept
    assert card.extra["repair"]["kept_float"] == f.repair["kept_float"]
    assert card.extra["repair"]["throughput"]["ratio"] == f.repair["throughput"]["ratio"]
    graph = onnx.load(str(f.path)).graph
    producers = {o: n for n in graph.node for o in n.output}
    for node in (n for n in graph.node if n.name in kept):
        assert all(producers.get(i) is None or producers[i].op_type != "DequantizeLinear" for i in node.input)
    assert sum(n.op_type == "QuantizeLinear" for n in graph.node) >= 3  # the rest stays int8


@pytest.mark.skipif(not HAS_OPENVINO, reason="needs OpenVINO")
def test_openvino_runs_the_float_island_and_passes_the_gate(planted_repaired, planted_plain):
    ir = next(f for f in planted_repaired.files if f.kind == "openvino-ir" and f.precision == "int8")
    assert ir.passed and ir.parity["op_missed_positives"] == 0
    plain_ir = next(f for f in planted_plain.files if f.kind == "openvino-ir" and f.precision == "int8")
    assert not plain_ir.passed


def test_an_already_good_model_is_left_untouched(healthy_ckpt, tmp_path):
    from bonedeploy.export import precision as prec

    result = export_outlier(healthy_ckpt, tmp_path / "out")
    f = int8_file(result)
    assert f.passed and f.repair is None
    report = json.loads(result.report.read_text())
    assert "repair" not in next(x for x in report["files"] if x["path"] == "model.int8.onnx")
    card = card_of(f.path)
    assert "repair" not in card.extra and card.extra["quantization"]["float_nodes"] == []
    # byte for byte the plain quantisation (same calibration images, same recipe)
    from bonedeploy.artefacts.checkpoint import load_checkpoint

    calib = prec.calibration_set(load_checkpoint(healthy_ckpt), None, card.preprocess)
    plain = prec.to_int8(result.out_dir / "model.onnx", card_of(result.out_dir / "model.onnx"), calib)
    assert plain.SerializeToString() == f.path.read_bytes()


def test_when_nothing_passes_export_says_what_it_tried_and_keeps_the_file_failed(planted_ckpt, tmp_path):
    from bonedeploy.eval.parity import GATES

    impossible = {**GATES, "int8": GATES["int8"].with_(max_abs_dprob=1e-9)}  # no int8 file meets it
    result = export_outlier(planted_ckpt, tmp_path / "out", gates=impossible,
                    repair=RepairConfig(time_ratio=None, max_checks=1, calibrations=()))
    f = int8_file(result)
    assert not f.passed and f.repair["status"] == FAILED and f.repair["stopped"] == "check budget spent: 1"
    assert len(f.repair["attempts"]) == 2 and not any(a["passed"] for a in f.repair["attempts"])
    assert card_of(f.path).extra["quantization"]["float_nodes"] == []  # the plain file, not a candidate
    assert f.path.name == "model.int8.onnx" and not list(f.path.parent.glob("repair-*"))
    lines = repair_summary(f.path.name, f.repair)
    assert lines[0] == "model.int8.onnx: no repair passed its gate (1 check(s), check budget spent: 1); tried:"
    assert len(lines) == 3 and "max |Δprob|" in lines[1]


def test_fp16_repair_keeps_the_overflowing_block_in_fp32(planted_ckpt, tmp_path):
    """A channel scaled past float16's range (65504) overflows to inf: fp16 keeps it in fp32."""
    from bonedeploy.artefacts.checkpoint import load_checkpoint, save_checkpoint
    from bonedeploy.models import create_model

    net = create_model(register_outlier()).eval()
    brightness_weights(net)
    plant(net, factor=1e5)
    ck = load_checkpoint(planted_ckpt)  # the planted model's card and split, its weights replaced
    ck["state_dict"] = net.state_dict()
    path = save_checkpoint(tmp_path / "overflow.pt", ck)
    result = export_outlier(path, tmp_path / "out", precisions=("fp32", "fp16"),
                            repair=RepairConfig(precisions=("fp16",), time_ratio=None, throughput_s=0.2))
    f = next(x for x in result.files if x.precision == "fp16")
    assert f.repair is not None and f.repair["attempts"][0]["passed"] is False
    assert f.passed and f.repair["status"] == REPAIRED
    kept = f.repair["recipe"]["fp32_nodes"]
    assert kept and set(kept) <= PLANTED_ISLAND | {"node__native_batch_norm_legit_no_training__0"}
    assert card_of(f.path).extra["fp32_nodes"] == kept
    assert np.isfinite(f.parity["max_abs_dprob"])
