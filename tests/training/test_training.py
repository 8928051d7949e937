"""Training: run folder contents, best-epoch choice, exact resume, refusals, bad files."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

from trainkit import make_folder, register_tiny  # noqa: E402

from bonedeploy.artefacts.checkpoint import FORMAT, load_checkpoint, model_from_checkpoint  # noqa: E402
from bonedeploy.errors import CheckpointError, ConfigError, DataError  # noqa: E402
from bonedeploy.training import (TrainConfig, evaluate, flip_where, is_better,  # noqa: E402
                                 resolve_runtime, train)
from bonedeploy.training.loop import draw_epoch  # noqa: E402

MODEL = register_tiny()


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    return make_folder(tmp_path_factory.mktemp("data"), per_class=10)


def cfg(data: Path, out: Path, **kw) -> TrainConfig:
    base = dict(model=MODEL, data=str(data), out=str(out), epochs=2, batch_size=4, workers=1,
                device="cpu", deterministic=True, save_every=0.0)
    return TrainConfig(**{**base, **kw})


@pytest.fixture(scope="module")
def run(data, tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "tiny"
    return train(cfg(data, out, epochs=3))


def test_run_folder_has_every_artefact(run):
    names = {p.name for p in run.out.iterdir()}
    assert {"best.pt", "last.pt", "metrics.json", "curves.png", "report.md", "report.json"} <= names
    assert not [n for n in names if n.endswith(".tmp")], "atomic writes leave no temp files"
    assert (run.out / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_best_pt_is_weights_only_and_self_describing(run):
    raw = torch.load(run.out / "best.pt", weights_only=True)  # plain types only
    assert raw["format"] == FORMAT
    assert raw["card"]["model"] == MODEL and raw["card"]["classes"] == ["Fractured", "Normal"]
    assert raw["card"]["precision"] == "fp32"
    assert raw["card"]["preprocess"]["crop_size"] == 400
    assert raw["config"]["lr"] == 1e-3 and raw["config"]["epochs"] == 3  # registry defaults
    assert raw["config"]["device"] == "cpu" and raw["config"]["precision"] == "fp32"
    assert raw["model_kwargs"] == {"dropout": 0.5}
    assert raw["split"]["format"] == "bonedeploy.split/1"
    assert len(raw["split"]["train"]) == 16 and len(raw["split"]["val"]) == 4
    assert all(len(e["sha256"]) == 64 for e in raw["split"]["train"])
    assert raw["versions"]["torch"] == str(torch.__version__) and "bonedeploy" in raw["versions"]
    assert len(raw["history"]) == 3 and raw["skipped_bad"] == []
    assert "optimizer" not in raw and "rng" not in raw
    last = torch.load(run.out / "last.pt", weights_only=True)
    assert last["epoch"] == 3 and {"optimizer", "rng"} <= set(last)


def test_best_epoch_is_best_val_accuracy_then_lowest_loss(run):
    hist = run.history
    best = max(hist, key=lambda h: (h["val_acc"], -h["val_loss"]))
    ckpt = load_checkpoint(run.out / "best.pt")
    assert ckpt["epoch"] == best["epoch"] == run.report["saved_epoch"]
    metrics = json.loads((run.out / "metrics.json").read_text())
    assert metrics["best_epoch"] == best["epoch"] and metrics["history"] == hist


def test_is_better_breaks_ties_by_lower_val_loss():
    a = {"val_acc": 0.8, "val_loss": 0.5}
    assert is_better(a, None)
    assert is_better({"val_acc": 0.8, "val_loss": 0.4}, a)
    assert not is_better({"val_acc": 0.8, "val_loss": 0.5}, a)
    assert not is_better({"val_acc": 0.7, "val_loss": 0.1}, a)
    assert is_better({"val_acc": 0.9, "val_loss": 9.0}, a)


def test_report_matches_the_saved_weights(run, data):
    """report.json is computed from best.pt as saved (what export will see)."""
    ckpt = load_checkpoint(run.out / "best.pt")
    model = model_from_checkpoint(ckpt)
    rep = json.loads((run.out / "report.json").read_text())
    val = rep["val"]
    assert val["n"] == 4 and sum(map(sum, val["confusion_matrix"])) == 4
    lo, hi = val["accuracy_ci95"]
    assert lo <= val["accuracy"] <= hi
    assert {"sensitivity", "specificity", "roc_auc", "f1", "report", "loss"} <= set(val)
    assert rep["params"] == sum(p.numel() for p in model.parameters())
    # the history's saved-epoch numbers were measured on the same weights (fp32 on the CPU)
    saved = next(h for h in run.history if h["epoch"] == rep["saved_epoch"])
    assert val["accuracy"] == pytest.approx(saved["val_acc"])
    assert val["loss"] == pytest.approx(saved["val_loss"], abs=1e-5)
    md = (run.out / "report.md").read_text()
    assert "95% CI" in md and "Fractured" in md and "seed reported" in md.lower()


def test_resume_gives_the_same_weights_as_a_straight_run(data, tmp_path):
    straight = train(cfg(data, tmp_path / "a", epochs=4))
    train(cfg(data, tmp_path / "b", epochs=2))
    resumed = train(TrainConfig(resume=str(tmp_path / "b"), epochs=4, workers=1, device="cpu",
                                deterministic=True))
    a = load_checkpoint(tmp_path / "a" / "last.pt")
    b = load_checkpoint(tmp_path / "b" / "last.pt")
    assert b["epoch"] == 4 and resumed.out == tmp_path / "b"
    for k, v in a["state_dict"].items():
        assert torch.equal(v, b["state_dict"][k]), k
    assert [h["val_loss"] for h in straight.history] == [h["val_loss"] for h in resumed.history]
    assert a["rng"]["generator"].equal(b["rng"]["generator"])


def test_resume_refuses_other_model_data_or_settings(data, tmp_path, run):
    with pytest.raises(ConfigError, match="model"):
        train(TrainConfig(resume=str(run.out), model="vgg8", epochs=5, workers=1))
    with pytest.raises(ConfigError, match="lr"):
        train(TrainConfig(resume=str(run.out), lr=0.5, epochs=5, workers=1))
    other = make_folder(tmp_path / "other", per_class=10, seed=1)
    with pytest.raises(ConfigError, match="images differ"):
        train(TrainConfig(resume=str(run.out), data=str(other), epochs=5, workers=1))
    with pytest.raises(ConfigError, match="already trained 3 of 3"):
        train(TrainConfig(resume=str(run.out), workers=1))
    with pytest.raises(CheckpointError, match="no last.pt"):
        train(TrainConfig(resume=str(tmp_path), workers=1))


def test_existing_run_is_not_overwritten_by_accident(run, data):
    with pytest.raises(ConfigError, match="already holds a run"):
        train(cfg(data, run.out))


@pytest.mark.parametrize("case", ["missing", "one_class", "empty_class", "batch", "cuda"])
def test_unusable_input_fails_before_writing(case, data, tmp_path):
    out = tmp_path / "out"
    kw = {}
    if case == "missing":
        src = tmp_path / "nope"
    elif case == "one_class":
        src = make_folder(tmp_path / "d", per_class=6, classes=("Fractured",))
    elif case == "empty_class":
        src = make_folder(tmp_path / "d", per_class=6)
        for p in (src / "Normal").iterdir():
            p.unlink()
    elif case == "batch":
        src, kw = data, {"batch_size": 64}
    else:
        if torch.cuda.is_available():
            pytest.skip("a CUDA GPU is present")
        src, kw = data, {"device": "cuda"}
    with pytest.raises((DataError, ConfigError)) as err:
        train(cfg(src, out, **kw))
    assert "\n" not in str(err.value)
    assert not out.exists()


def test_unreadable_files_are_listed_or_skipped_and_recorded(tmp_path):
    src = make_folder(tmp_path / "d", per_class=10)
    (src / "Fractured" / "F000.png").write_bytes(b"not a png")
    (src / "Normal" / "N005.png").write_bytes(b"")
    with pytest.raises(DataError) as err:
        train(cfg(src, tmp_path / "out"))
    assert "F000.png" in str(err.value) and "N005.png" in str(err.value)
    assert not (tmp_path / "out").exists()
    res = train(cfg(src, tmp_path / "out", skip_bad=True, epochs=1))
    ckpt = load_checkpoint(tmp_path / "out" / "best.pt")
    skipped = sorted(Path(b["path"]).name for b in ckpt["skipped_bad"])
    assert skipped == ["F000.png", "N005.png"]
    assert len(res.report["skipped_bad"]) == 2
    assert "N005.png" in (tmp_path / "out" / "report.md").read_text()


def test_separate_val_folder(tmp_path):
    tr = make_folder(tmp_path / "train", per_class=6)
    va = make_folder(tmp_path / "val", per_class=3, seed=3)
    res = train(cfg(tr, tmp_path / "out", val=str(va), epochs=1))
    ckpt = load_checkpoint(res.best_path)
    assert len(ckpt["split"]["train"]) == 12 and len(ckpt["split"]["val"]) == 6
    assert ckpt["split"]["val"][0]["path"].startswith("val/")


def test_unlabelled_folder_beside_the_classes_is_not_a_class(tmp_path):
    src = make_folder(tmp_path / "d", per_class=6)
    make_folder(tmp_path / "d" / "test", per_class=2, classes=("x",))
    res = train(cfg(src, tmp_path / "out", epochs=1))
    assert res.report["classes"] == ["Fractured", "Normal"]


def test_flip_and_batch_order():
    x = torch.arange(2 * 1 * 2 * 3, dtype=torch.float32).view(2, 1, 2, 3)
    out = flip_where(x, torch.tensor([True, False]))
    assert torch.equal(out[0], x[0].flip(-1)) and torch.equal(out[1], x[1])
    g1, g2 = torch.Generator().manual_seed(5), torch.Generator().manual_seed(5)
    p1, f1 = draw_epoch(100, 0.5, g1)
    p2, f2 = draw_epoch(100, 0.5, g2)
    assert torch.equal(p1, p2) and torch.equal(f1, f2)
    assert sorted(p1.tolist()) == list(range(100)) and 30 < int(f1.sum()) < 70


def test_evaluate_is_batch_size_independent():
    from trainkit import build_tiny

    torch.manual_seed(0)
    model = build_tiny()
    x, y = torch.rand(10, 1, 400, 400), torch.tensor([0, 1] * 5)
    rt = resolve_runtime("cpu", "fp32", False, False)
    a, b = evaluate(model, x, y, batch_size=3, rt=rt), evaluate(model, x, y, batch_size=10, rt=rt)
    assert torch.allclose(a.logits, b.logits, atol=1e-5) and a.correct == b.correct
    assert a.loss == pytest.approx(b.loss, abs=1e-6)


def test_config_validation_lists_choices():
    with pytest.raises(ConfigError, match="cpu, cuda"):
        TrainConfig(model=MODEL, device="tpu").resolve()
    with pytest.raises(ConfigError, match="fp32, bf16"):
        TrainConfig(model=MODEL, precision="fp16").resolve()
    with pytest.raises(ConfigError, match="epochs"):
        TrainConfig(model=MODEL, epochs=0).resolve()
    c = TrainConfig(model="alexnet_d08_wd1e-3").resolve()
    assert (c.epochs, c.lr, c.batch_size, c.weight_decay, c.dropout) == (100, 1e-4, 32, 1e-3, 0.8)
    assert c.out == str(Path("runs") / "alexnet_d08_wd1e-3")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_bf16_run(data, tmp_path):
    res = train(cfg(data, tmp_path / "gpu", device="auto", deterministic=False, epochs=1))
    ckpt = load_checkpoint(res.best_path)
    assert ckpt["config"]["device"] == "cuda" and ckpt["runtime"]["channels_last"]
    assert all(v.device.type == "cpu" for v in ckpt["state_dict"].values())


@pytest.mark.slow
def test_resume_is_exact_for_a_seed_model(tmp_path):
    """The same resume guarantee on a real seed architecture (vgg8, 1 x 400 x 400)."""
    src = make_folder(tmp_path / "d", per_class=3)  # 4 train + 2 val images: one batch
    kw = dict(model="vgg8", batch_size=4, lr=1e-3)
    train(cfg(src, tmp_path / "a", epochs=2, **kw))
    train(cfg(src, tmp_path / "b", epochs=1, **kw))
    train(TrainConfig(resume=str(tmp_path / "b"), epochs=2, workers=1, device="cpu",
                      deterministic=True))
    a = load_checkpoint(tmp_path / "a" / "last.pt")["state_dict"]
    b = load_checkpoint(tmp_path / "b" / "last.pt")["state_dict"]
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    fresh = model_from_checkpoint(load_checkpoint(tmp_path / "a" / "best.pt"))
    assert sum(p.numel() for p in fresh.parameters()) == 395_634


def test_precise_bn_sets_running_stats_to_the_training_set_statistics():
    import torch

    from bonedeploy.training.loop import recalibrate_bn
    from bonedeploy.training.runtime import Runtime

    torch.manual_seed(0)
    x = torch.randn(37, 1, 8, 8) * 3 + 5
    model = torch.nn.Sequential(torch.nn.BatchNorm2d(1), torch.nn.Dropout(0.5)).eval()
    rt = Runtime(device=torch.device("cpu"), precision="fp32", channels_last=False, deterministic=False)
    recalibrate_bn(model, x, batch_size=10, rt=rt)
    bn = model[0]
    assert not model.training  # mode restored
    # cumulative average over batches of 10, 10, 10, 7: the batch means weighted equally per batch
    batches = x.split(10)
    assert bn.running_mean.item() == pytest.approx(sum(b.mean() for b in batches).item() / 4, rel=1e-5)
    assert bn.running_mean.item() == pytest.approx(5.0, abs=0.5)


def test_precise_bn_subset_spans_a_class_sorted_set():
    import torch

    from bonedeploy.training.loop import recalibrate_bn
    from bonedeploy.training.runtime import Runtime

    x = torch.cat([torch.zeros(50, 1, 4, 4), torch.ones(50, 1, 4, 4)])  # class-sorted
    model = torch.nn.Sequential(torch.nn.BatchNorm2d(1))
    rt = Runtime(device=torch.device("cpu"), precision="fp32", channels_last=False, deterministic=False)
    recalibrate_bn(model, x, batch_size=100, rt=rt, max_images=10)
    assert model[0].running_mean.item() == pytest.approx(0.5)


def test_no_eval_train_keeps_the_training_pass_figures_and_skips_that_pass(data, tmp_path, monkeypatch):
    """--no-eval-train: one evaluation per epoch (val) instead of two; same weights either way."""
    import bonedeploy.training.fit as fit

    calls = []
    real = fit.evaluate
    monkeypatch.setattr(fit, "evaluate", lambda model, x, y, **kw: calls.append(len(y)) or real(model, x, y, **kw))
    fast = train(cfg(data, tmp_path / "fast", eval_train=False))
    fast_calls = list(calls)  # per epoch (the report's pass over best.pt is the OOD gate's measure)
    assert all(h["train_mode"] == "fit" and 0.0 <= h["train_acc"] <= 1.0 for h in fast.history)
    calls.clear()
    full = train(cfg(data, tmp_path / "full"))
    assert len(calls) == 4 and all(h["train_mode"] == "eval" for h in full.history)
    assert fast_calls == calls[1::2] and calls[0] > calls[1]  # val only (smaller than train)
    a = load_checkpoint(tmp_path / "fast" / "best.pt")["state_dict"]
    b = load_checkpoint(tmp_path / "full" / "best.pt")["state_dict"]
    assert a.keys() == b.keys() and all((a[k] == b[k]).all() for k in a)
