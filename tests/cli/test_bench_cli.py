"""``bonedeploy bench`` end to end on tiny real ONNX classifiers (onnxruntime, real parity code):
outputs written, unavailable rows listed with their reasons, exit 2 when a parity gate fails."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from bonedeploy.cli.app import main
from onnxkit import tiny_card, tiny_onnx_classifier

FAST = ["--batch-sizes", "1,3", "--duration", "0.01", "--warmup", "0", "--min-iters", "2",
        "--cold-start-runs", "0"]  # cold start: tests/bench/test_coldstart.py


def write_png(path, level, seed):
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    Image.fromarray(np.clip(rng.normal(level, 20, (40, 44)), 0, 255).astype(np.uint8)).save(path)


@pytest.fixture
def data(tmp_path):
    """5 bright Fractured, 5 dark Normal images: the tiny model (brighter -> Fractured) gets them right."""
    root = tmp_path / "data"
    for i in range(5):
        write_png(root / "Fractured" / f"f{i}.png", 190, i)
        write_png(root / "Normal" / f"n{i}.png", 60, 10 + i)
    return root


def make_run(tmp_path, fp16_gain: float) -> None:
    """model.onnx (fp32) and model.fp16.onnx; ``fp16_gain`` < 0 makes the 'fp16' file invert
    every prediction, so its parity gate must fail."""
    tiny_onnx_classifier(tmp_path / "model.onnx")
    tiny_onnx_classifier(tmp_path / "model.fp16.onnx", tiny_card(precision="fp16"), gain=fp16_gain)


def run_cli(argv, capsys):
    with pytest.raises(SystemExit) as exc:
        main(argv)
    out = capsys.readouterr()
    return exc.value.code, out.out + out.err


def test_bench_writes_reports_and_lists_what_cannot_run(tmp_path, data, capsys):
    make_run(tmp_path, fp16_gain=8.0)
    out = tmp_path / "out"
    code, text = run_cli(["bench", "--dir", str(tmp_path), "--data", str(data), *FAST, "--mode", "both",
                          "--json", str(out / "b.json"), "--md", str(out / "b.md"),
                          "--plot", str(out / "b.png")], capsys)
    assert code in (0, None), text
    d = json.loads((out / "b.json").read_text())
    rows = {r["key"]: r for r in d["results"]}
    assert rows["onnx-fp32"]["status"] == "ok" and rows["onnx-fp16"]["status"] == "ok"
    for key in ("onnx-fp32", "onnx-fp16"):
        for mode in ("compute", "e2e"):
            assert set(rows[key]["timings"][mode]) == {"1", "3"}
            assert rows[key]["timings"][mode]["3"]["iterations"] >= 2
    assert rows["onnx-fp16"]["parity"]["top1_agreement"] == 1.0
    assert rows["onnx-fp32"]["parity"]["accuracy_cand"] == 1.0  # labelled --data, all right
    assert d["data"]["kind"] == "data folder" and d["data"]["n"] == 10
    assert rows["torch-fp32"]["status"] == "missing" and "bonedeploy train" in rows["torch-fp32"]["reason"]
    assert rows["onnx-int8"]["status"] == "missing" and "--precision fp32,fp16,int8" in rows["onnx-int8"]["reason"]
    assert rows["tensorrt"]["status"] in ("missing", "unavailable")
    assert any("parity and speed-ups are against ONNX fp32" in n for n in d["notes"])
    assert d["reference"] == "onnx-fp32"
    assert (out / "b.md").read_text().count("| ONNX fp16 |") >= 2
    assert (out / "b.png").stat().st_size > 10_000
    assert "ONNX fp16" in text and "wrote" in text


def test_bench_exits_2_when_a_gate_fails_and_still_writes_the_report(tmp_path, data, capsys):
    make_run(tmp_path, fp16_gain=-8.0)
    js = tmp_path / "b.json"
    code, text = run_cli(["bench", "--dir", str(tmp_path), "--data", str(data), *FAST,
                          "--mode", "compute", "--json", str(js), "--quiet"], capsys)
    assert code == 2
    assert "parity gate failed for ONNX fp16" in text and "label flip" in text
    row = next(r for r in json.loads(js.read_text())["results"] if r["key"] == "onnx-fp16")
    assert row["status"] == "gate failed" and row["parity"]["top1_agreement"] == 0.0
    assert len(row["parity"]["flips"]) == 10


def test_bench_refuses_bad_options(tmp_path, capsys):
    code, text = run_cli(["bench", "--dir", str(tmp_path), "--mode", "fast"], capsys)
    assert code == 1 and "valid modes: compute, e2e, both" in text
    code, text = run_cli(["bench", "--dir", str(tmp_path), "--batch-sizes", "1,x"], capsys)
    assert code == 1 and "--batch-sizes" in text
    code, text = run_cli(["bench", str(tmp_path / "notes.txt")], capsys)
    assert code == 1 and "valid suffixes" in text


def test_bench_in_an_empty_folder_says_what_is_missing(tmp_path, capsys):
    code, text = run_cli(["bench", "--dir", str(tmp_path), *FAST, "--quiet"], capsys)
    assert code == 1
    assert "nothing could be benchmarked" in text and "best.pt: no such file" in text
