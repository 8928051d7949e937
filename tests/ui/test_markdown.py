"""Markdown pipe tables: one writer (ui.markdown.pipe_table) behind every report's tables; a cell
can never break its table; the terminal reader (ui.tables) reads escaped pipes back."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import numpy as np
import pytest

from bonedeploy.ui.markdown import pipe_table

PKG = Path(__file__).resolve().parents[2] / "bonedeploy"
SEPARATOR = re.compile(r"^\|(\s*:?-{3,}:?\s*\|)+$")
BOUNDARY = re.compile(r"(?<!\\)\|")


def tables_in(text: str) -> list[list[list[str]]]:
    """Every pipe table of a Markdown text, as rows of cells (escaped pipes stay inside cells)."""
    tables, current = [], []
    for line in [*text.splitlines(), ""]:
        if line.startswith("|"):
            current.append(line)
        elif current:
            tables.append(current)
            current = []
    return [[BOUNDARY.split(line.strip())[1:-1] for line in t] for t in tables]


def assert_well_formed(text: str, n_tables: int) -> None:
    tables = tables_in(text)
    assert len(tables) == n_tables, text
    for rows in tables:
        lines = ["|" + "|".join(r) + "|" for r in rows]
        assert SEPARATOR.match(lines[1]), lines[1]
        assert {len(r) for r in rows} == {len(rows[0])}, "\n".join(lines)


def test_header_alignment_and_cells():
    assert pipe_table(["name", "n", "x"], [["a", 1, 2.5], ["b", "", None]], "lrc") == (
        "| name | n | x |\n|---|---:|:---:|\n| a | 1 | 2.5 |\n| b | | |")
    assert pipe_table(["", "train"], [["loss", "0.1"]]).splitlines()[:2] == ["| | train |", "|---|---|"]


def test_a_cell_cannot_break_its_table():
    text = pipe_table(["file", "status"], [["a|b.png", "failed:\n  TensorRT said\n  no"]])
    assert text.splitlines()[2] == r"| a\|b.png | failed: TensorRT said no |"
    assert_well_formed(text, 1)


def test_the_terminal_reader_reads_escaped_pipes_back():
    from bonedeploy.ui.tables import _cells

    line = pipe_table(["file", "status"], [["a|b.png", "ok"]]).splitlines()[2]
    assert _cells(line) == ["a|b.png", "ok"]


@pytest.mark.parametrize("header, rows, align", [
    (["a", "b"], [["1"]], ""),
    (["a"], [["1"]], "lr"),
    (["a"], [["1"]], "x"),
])
def test_mismatched_rows_and_alignments_are_refused(header, rows, align):
    with pytest.raises(ValueError):
        pipe_table(header, rows, align)


def test_no_module_writes_a_table_by_hand():
    """A table separator or a row of pipes spelled in code outside ui/markdown.py: a second
    table writer that escapes nothing."""
    hand = re.compile(r"(^|\|)\s*:?-{3,}:?\s*(\||$)|^\| | \|$|^:?-{3}:?$")
    found = []
    for path in PKG.rglob("*.py"):
        if path.relative_to(PKG).as_posix() == "ui/markdown.py":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and hand.search(node.value):
                found.append(f"{path.relative_to(PKG)}:{node.lineno} {node.value!r}")
    assert not found, found


# --- each module's tables, with cells that used to break them -------------------------------
def test_training_report_tables(monkeypatch):
    from bonedeploy.training import report

    class Param:
        def numel(self):
            return 10

    history = [{"epoch": e, "val_acc": 0.5 + e / 20, "val_loss": 1.0} for e in range(1, 5)]
    ckpt = {"card": {"classes": ["Fractured", "Normal"]}, "epoch": 4, "history": history,
            "state_dict": {"w": Param()}, "config": {"model": "alexnet_d08_wd1e-3", "epochs": 8, "dropout": 0.8,
                                                     "weight_decay": 1e-3, "lr": 1e-4, "batch_size": 16}}
    y = np.array([0, 0, 1, 1])
    logits = np.array([[2.0, -2.0], [1.0, 0.0], [-1.0, 1.0], [0.5, 0.0]])
    r = report.build_report(ckpt, {"train": logits, "val": logits}, {"train": y, "val": y})
    r["errors"] = [{"path": "scans/a|b.png", "true": "Normal", "pred": "Fractured", "p_pred": 0.62}]
    md = report.render_markdown(r)
    assert "| accuracy (95% Wilson CI) | 0.750 (95% CI 0.301–0.954, n=4) |" in md
    assert "| **Fractured** | 2 | 0 |" in md and r"| scans/a\|b.png | Normal | Fractured | 0.620 |" in md
    assert_well_formed(md, 4)


def test_sweep_results_table():
    from bonedeploy.training.results import HEADER, RESULT_COLUMNS, markdown_table

    missing = {k: None for k in RESULT_COLUMNS} | {"name": "vgg|x", "status": "missing"}
    md = markdown_table([missing])
    assert md.splitlines()[2] == r"| vgg\|x | (no report: not trained yet) |" + " |" * (len(HEADER) - 2)
    assert_well_formed(md, 1)


def test_demo_summary_tables():
    from bonedeploy.demo import summary_markdown

    s = {"model": "alexnet_d08_wd1e-3", "difficulty": "easy", "device": "cpu", "size": {"epochs": 4},
         "data": {"counts": {"Fractured": 100, "Normal": 100}, "root": "/d", "answers": "/d/a.csv"},
         "training": {"best_epoch": 4, "val_accuracy": 0.95, "checkpoint": "/r/best.pt"},
         "test": {"n": 100, "artefact": "/r/model.int8.onnx", "accuracy": 0.96, "accuracy_ci95": [0.9, 0.98],
                  "sensitivity": 0.94, "specificity": 0.98, "roc_auc": 0.984, "predictions": "/r/p.csv"},
         "export": [{"file": "/r/model.onnx", "precision": "fp32", "mb": 140.6, "max_abs_dprob": 1e-5,
                     "top1_agreement": 1.0, "accuracy_delta": 0.0, "passed": True}],
         "engine": {"built": False, "reason": "TensorRT is not installed"},
         "bench": {"md": "b.md", "json": "b.json", "plot": "b.png",
                   "rows": [{"artefact": "ONNX int8", "batch": 8, "p50_ms": 120.0, "images_per_s": 63.3,
                             "status": "ok"},
                            {"artefact": "TensorRT fp16", "status": "error",
                             "reason": "TensorRT failed:\n  [node 3] Unsupported | operator"}]},
         "seconds": {"synth": 16}, "total_seconds": 16}
    md = summary_markdown(s)
    assert "| model.onnx | fp32 | 140.6 | 1.0e-05 | 100.0% | +0.0 pt | pass |" in md
    assert r"| TensorRT fp16 | – | – | – | error: TensorRT failed: [node 3] Unsupported \| operator |" in md
    assert_well_formed(md, 2)


def test_calibration_report_table():
    from bonedeploy.eval import calibration as cal

    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 400)
    fit = cal.fit_decision(rng.normal(size=(400, 2)) + 2.0 * np.eye(2)[y], y, ("Fractured", "Normal"), None,
                           "validation split")
    md = cal.render_markdown(fit, "m", None)
    assert "| figure | before (T = 1) | after |\n|---|---:|---:|\n| nll |" in md
    assert_well_formed(md, 1)


def test_bench_report_tables(tmp_path):
    from bonedeploy.bench import ArtefactResult, BenchConfig, BenchReport, Target, summarize
    from bonedeploy.bench.render.report import to_markdown

    cfg = BenchConfig(run_dir=tmp_path, batch_sizes=(1,), duration_s=0.5, mode="compute")
    ok = ArtefactResult(Target("onnx", "ONNX | fp32", tmp_path / "m.onnx", "onnxruntime", "fp32", reference=True),
                        precision="fp32", size_mb=1.0, load_s=0.1, timings={"compute": {1: summarize([0.01] * 4, 1)}})
    machine = {"cpu": "cpu", "cores": 2, "gpu": None, "versions": {"bonedeploy": "t"}}
    md = to_markdown(BenchReport(cfg, machine, [ok], {"kind": "synthetic", "n": 4}, [],
                                 created="2026-01-01T00:00:00+00:00").to_dict())
    assert r"| ONNX \| fp32 | ok | 1.0 |" in md
    assert_well_formed(md, 3)
