"""The sweep: the seed recipe, resumable runs, the seed-format results table."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

pytest.importorskip("torch")
from trainkit import make_folder, register_tiny  # noqa: E402

from bonedeploy.errors import ConfigError  # noqa: E402
from bonedeploy.models import get_model_entry  # noqa: E402
from bonedeploy.training.sweep import SweepConfig, load_recipe, plan, run_sweep  # noqa: E402

SEED_RECIPE = Path(__file__).parents[2] / "train" / "seed.toml"
MODEL = register_tiny()

TINY_RECIPE = f"""
[defaults]
batch_size = 4
model = "{MODEL}"

[[run]]
name = "a"
dropout = 0.2

[[run]]
name = "b"
dropout = 0.0
lr = 3e-3
"""


def test_seed_recipe_is_the_seed_table():
    runs = load_recipe(SEED_RECIPE)
    assert [r.name for r in runs] == ["vgg8", "vgg10", "alexnet_d05", "alexnet_d08",
                                      "alexnet_d08_wd1e-4", "alexnet_d08_wd1e-3", "resnet26",
                                      "resnet16"]
    for r in runs:
        e = get_model_entry(r.options["model"])
        assert r.options["epochs"] == e.defaults.epochs
        assert r.options["weight_decay"] == e.defaults.weight_decay
        assert r.options["lr"] == e.defaults.lr == 1e-4
        assert r.options["batch_size"] == e.defaults.batch_size == 32
        assert r.options.get("dropout") == e.kwargs.get("dropout")


def test_plan_scales_epochs_and_selects(tmp_path):
    cfg = SweepConfig(str(SEED_RECIPE), str(tmp_path), out=str(tmp_path / "runs"),
                      epochs_scale=0.1, only=("vgg8", "resnet26"))
    p = plan(cfg)
    assert [(r.name, tc.epochs, st) for r, tc, st in p] == [("vgg8", 10, "new"), ("resnet26", 2, "new")]
    assert p[0][1].out == str(tmp_path / "runs" / "vgg8")
    with pytest.raises(ConfigError, match="runs: vgg8, vgg10"):
        plan(SweepConfig(str(SEED_RECIPE), str(tmp_path), only=("vgg9",)))
    with pytest.raises(ConfigError, match="not both"):
        plan(SweepConfig(str(SEED_RECIPE), str(tmp_path), epochs=1, epochs_scale=0.5))


@pytest.mark.parametrize("text, match", [
    ("[[run]]\nname = 'vgg8'\nlearning_rate = 1\n", "unknown keys.*valid: model, epochs"),
    ("[[run]]\nname = 'vgg8'\n[[run]]\nname = 'vgg8'\n", "appears twice"),
    ("[defaults]\nlr = 1\n", "no \\[\\[run\\]\\]"),
    ("[[run]]\nname = \n", "not valid TOML"),
    ("[runs]\n", "unknown tables"),
])
def test_bad_recipes_are_refused(tmp_path, text, match):
    path = tmp_path / "r.toml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=match):
        load_recipe(path)


def test_sweep_trains_writes_table_and_resumes(tmp_path):
    data = make_folder(tmp_path / "data", per_class=8)
    recipe = tmp_path / "tiny.toml"
    recipe.write_text(TINY_RECIPE)
    out = tmp_path / "runs"
    cfg = SweepConfig(str(recipe), str(data), out=str(out), epochs=1, device="cpu", workers=1,
                      command="bonedeploy sweep tiny.toml data --epochs 1")
    res = run_sweep(cfg)
    assert res.statuses == {"a": "new", "b": "new"}
    assert (out / "a" / "best.pt").is_file() and (out / "b" / "report.json").is_file()
    rows = list(csv.DictReader((out / "results.csv").open()))
    assert [r["name"] for r in rows] == ["a", "b"] and all(r["status"] == "done" for r in rows)
    assert float(rows[0]["val_ci_low"]) <= float(rows[0]["val_acc"]) <= float(rows[0]["val_ci_high"])
    assert rows[0]["seed_val_acc"] == "0.5" and rows[1]["hyperparameters"].startswith("tiny test net")
    md = (out / "results.md").read_text()
    assert "| Model | Hyper parameters | Epochs (saved ep) | Accuracy (train, val) |" in md
    assert "(Train: 0.50) Val: 0.50" in md  # the seed column
    assert "bonedeploy sweep tiny.toml data --epochs 1" in md
    # finished runs are skipped; a longer --epochs resumes them from last.pt
    assert run_sweep(cfg).statuses == {"a": "done", "b": "done"}
    longer = run_sweep(SweepConfig(str(recipe), str(data), out=str(out), epochs=2, device="cpu",
                                   workers=1, only=("a",)))
    assert longer.statuses == {"a": "resume"}
    assert [(r["name"], r["epochs"]) for r in longer.rows] == [("a", 2), ("b", 1)]


def test_sweep_refuses_a_run_folder_trained_on_other_data(tmp_path):
    recipe = tmp_path / "tiny.toml"
    recipe.write_text(TINY_RECIPE)
    a = make_folder(tmp_path / "a", per_class=4)
    b = make_folder(tmp_path / "b", per_class=4, seed=1)
    out = tmp_path / "runs"
    run_sweep(SweepConfig(str(recipe), str(a), out=str(out), epochs=1, device="cpu", workers=1,
                          only=("a",)))
    with pytest.raises(ConfigError, match="holds a run with data"):
        plan(SweepConfig(str(recipe), str(b), out=str(out), epochs=1, only=("a",)))
