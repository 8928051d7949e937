"""``bonedeploy train`` / ``bonedeploy sweep`` as a user runs them: real processes, exit codes,
one-line errors, nothing written on refusal."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
TESTS = Path(__file__).parents[1]
sys.path.insert(0, str(TESTS))
from trainkit import TINY, make_folder, register_tiny  # noqa: E402

# A real process for the exit-code/stderr contract; in-process for the rest (torch imports once).
LAUNCH = ("import sys; sys.path.insert(0, {tests!r}); import trainkit; trainkit.register_tiny(); "
          "from bonedeploy.cli.app import main; main(sys.argv[1:])")


def run_process(*args: str) -> subprocess.CompletedProcess:
    code = LAUNCH.format(tests=str(TESTS))
    return subprocess.run([sys.executable, "-c", code, *map(str, args)], capture_output=True,
                          text=True, timeout=600)


@pytest.fixture
def cli(capsys):
    """``bonedeploy ARGS`` in this process -> (exit code, stdout, stderr)."""
    from bonedeploy.cli.app import main

    register_tiny()

    def invoke(*args) -> subprocess.CompletedProcess:
        capsys.readouterr()
        try:
            main([str(a) for a in args])
            code = 0
        except SystemExit as e:
            code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
        out = capsys.readouterr()
        return subprocess.CompletedProcess(args, code, out.out, out.err)
    return invoke


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    return make_folder(tmp_path_factory.mktemp("cli") / "data", per_class=8)


def test_train_then_resume_quiet(cli, data, tmp_path):
    out = tmp_path / "run"
    r = cli("train", data, "--model", TINY, "--epochs", "2", "--out", out, "--device", "cpu",
            "--workers", "1", "--quiet")
    assert r.returncode == 0, r.stderr
    *warnings, last = r.stdout.splitlines()  # --quiet: warnings and the final line, no epoch lines
    assert all(w.startswith("warning: ") for w in warnings), warnings
    assert f"{TINY}: saved epoch" in last and "/2, val accuracy" in last and "95% CI" in last
    assert {"best.pt", "last.pt", "report.md", "curves.png", "metrics.json"} <= {
        p.name for p in out.iterdir()}
    r = cli("train", "--resume", out, "--epochs", "3", "--workers", "1")  # plain lines when not a terminal
    assert r.returncode == 0, r.stderr
    assert [ln.split()[1] for ln in r.stdout.splitlines() if ln.startswith("epoch ")] == ["3/3"]
    r = cli("train", data, "--model", TINY, "--out", out, "--quiet")
    assert r.returncode == 1 and "already holds a run" in r.stderr


def test_rich_progress_mode_runs(cli, data, tmp_path):
    r = cli("train", data, "--model", TINY, "--epochs", "1", "--out", tmp_path / "r",
            "--device", "cpu", "--workers", "1")
    assert r.returncode == 0, r.stderr
    assert "epoch 1/1" in r.stdout and "saved epoch 1/1" in r.stdout


@pytest.mark.parametrize("args, message", [
    (["--device", "cuda"], "--device cuda: no CUDA GPU"),
    (["--device", "tpu"], "choose one of: auto, cpu, cuda"),
    (["--model", "vgg9"], "valid models:"),
    (["--batch-size", "64"], "fewer than the batch size 64"),
    (["--classes", "Fractured"], "two or more"),
    (["--dropout", "0.3", "--model", "vgg8"], "--dropout applies to: alexnet_d05"),
    # 8 images per class: 2 validation positives, far below the operating point's minimum
    (["--target-sensitivity", "0.95"], "has 2 Fractured images; an operating point needs at least 30"),
])
def test_refusals_are_one_line_and_write_nothing(cli, data, tmp_path, args, message):
    if args[:2] == ["--device", "cuda"] and torch.cuda.is_available():
        pytest.skip("a CUDA GPU is present")
    out = tmp_path / "out"
    base = ["--model", TINY] if "--model" not in args else []
    run = run_process if args[1] == "cuda" else cli  # one real process: the true exit status
    r = run("train", data, *base, *args, "--out", out, "--workers", "1")
    assert r.returncode == 1
    errors = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert len(errors) == 1 and errors[0].startswith("error: ") and message in errors[0], r.stderr
    assert not out.exists()


def test_small_split_console_says_why_t_is_1_and_force_fits_it(cli, data, tmp_path):
    r = cli("train", data, "--model", TINY, "--epochs", "1", "--out", tmp_path / "a", "--device", "cpu",
            "--workers", "1", "--quiet")
    assert r.returncode == 0, r.stderr
    [why] = [ln for ln in r.stdout.splitlines() if ln.startswith("warning: temperature")]  # --quiet keeps warnings
    assert any(ln.startswith("warning: OOD threshold set on") for ln in r.stdout.splitlines())
    assert "temperature not fitted (T = 1 kept and no operating point set)" in why
    assert "has 2 Fractured and 2 Normal images" in why and "at least 75 images of each class" in why
    r = cli("train", data, "--model", TINY, "--epochs", "1", "--out", tmp_path / "b", "--device", "cpu",
            "--workers", "1", "--quiet", "--target-sensitivity", "0.95", "--force")
    assert r.returncode == 0, r.stderr
    assert "warning: temperature fitted below the minimum (--force)" in r.stdout
    assert "warning: operating point fitted below the minimum (--force)" in r.stdout
    r = cli("train", data, "--model", TINY, "--epochs", "1", "--out", tmp_path / "c", "--device", "cpu",
            "--workers", "1")  # without --quiet: the decision line too
    assert r.returncode == 0, r.stderr
    assert "temperature 1.000 (not fitted); operating point: argmax" in r.stdout


def test_missing_class_folder_and_missing_data(cli, tmp_path):
    one = make_folder(tmp_path / "one", per_class=4, classes=("Normal",))
    r = cli("train", one, "--model", TINY, "--out", tmp_path / "o")
    assert r.returncode == 1 and "only one class folder" in r.stderr
    r = cli("train", "--model", TINY)
    assert r.returncode == 1 and "missing DATA" in r.stderr
    assert not (tmp_path / "o").exists()


def test_sweep_command(cli, data, tmp_path):
    recipe = tmp_path / "r.toml"
    recipe.write_text(f'[defaults]\nmodel = "{TINY}"\nbatch_size = 4\n\n[[run]]\nname = "x"\n')
    r = cli("sweep", recipe, data, "--out", tmp_path / "runs", "--epochs", "1", "--quiet",
            "--device", "cpu", "--workers", "1")
    assert r.returncode == 0, r.stderr
    md = (tmp_path / "runs" / "results.md").read_text()
    assert "`x`" in md and "--epochs 1" in md
    r = cli("sweep", recipe, data, "--out", tmp_path / "runs", "--only", "y")
    assert r.returncode == 1 and "runs: x" in r.stderr


@pytest.mark.slow
def test_train_a_seed_model_end_to_end(cli, tmp_path):
    """A real seed architecture (vgg8, 1 x 400 x 400) through the CLI, then its checkpoint."""
    from bonedeploy.artefacts.checkpoint import load_checkpoint, model_from_checkpoint

    data = make_folder(tmp_path / "d", per_class=5)
    r = cli("train", data, "--model", "vgg8", "--epochs", "1", "--batch-size", "4",
            "--out", tmp_path / "vgg8", "--quiet", "--device", "cpu", "--workers", "1")
    assert r.returncode == 0, r.stderr
    ckpt = load_checkpoint(tmp_path / "vgg8" / "best.pt")
    model = model_from_checkpoint(ckpt)
    assert sum(p.numel() for p in model.parameters()) == 395_634
    assert model(torch.zeros(1, 1, 400, 400)).shape == (1, 2)
