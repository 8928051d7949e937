"""``bonedeploy export`` on the command line: files, report, gate exit codes, bad input, profiles."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from exportkit import make_checkpoint, make_tree  # noqa: E402

pytest.importorskip("torch")
pytest.importorskip("onnx")

from clikit import run_cli  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
LENIENT_INT8 = ["--gate-int8", "0", "--max-accuracy-drop", "100"]  # random weights: int8 may flip



@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    """A tiny checkpoint whose recorded split (32 train / 8 val) exists on disk."""
    base = tmp_path_factory.mktemp("export")
    data = make_tree(base / "data", per_class=20)
    make_checkpoint(base / "run" / "best.pt", data_root=data)
    return base


def listing(folder):
    return sorted(p.name for p in folder.iterdir())


def test_default_export_writes_onnx_files_report_and_the_engine_command(run_dir, capsys):
    out = run_dir / "out1"
    code, stdout, _ = run_cli(["export", run_dir / "run" / "best.pt", "--out", out,
                               "--precision", "fp32,fp16,int8", *LENIENT_INT8], capsys)
    assert code == 0, stdout
    assert listing(out) == ["export.json", "model.fp16.onnx", "model.int8.onnx", "model.onnx"]
    for name in ("model.onnx", "model.fp16.onnx", "model.int8.onnx"):
        assert name in stdout
    assert "pass" in stdout and "8 checkpoint validation split images" in stdout
    assert "no TensorRT engine built" in stdout and f"bonedeploy export {out / 'model.fp16.onnx'}" in stdout
    report = json.loads((out / "export.json").read_text())
    assert [f["precision"] for f in report["files"]] == ["fp32", "fp16", "int8"]
    assert all(f["passed"] and len(f["sha256"]) == 64 and f["bytes"] > 0 for f in report["files"])
    assert report["files"][0]["parity"]["max_abs_dprob"] <= 1e-4
    assert report["engine"]["built"] is False and report["engine"]["command"].endswith("model.fp16.onnx")
    assert report["parity_inputs"] == {"kind": "checkpoint validation split", "n": 8,
                                       "root": str(run_dir / "data"), "labelled": True,
                                       "reference": "PyTorch fp32 on the CPU"}


def test_a_failing_gate_keeps_the_file_names_it_in_red_and_exits_2(run_dir, capsys):
    out = run_dir / "out2"
    code, stdout, err = run_cli(["export", run_dir / "run" / "best.pt", "-o", out, "--gate-fp16", "1e-12",
                                 "--no-trt"], capsys)
    assert code == 2
    assert (out / "model.fp16.onnx").is_file() and (out / "model.onnx").is_file()
    assert "FAIL" in stdout and "model.fp16.onnx fails its gate" in stdout
    assert err.startswith("error: 1 file(s) failed the parity gate: model.fp16.onnx") and err.count("\n") == 1
    report = json.loads((out / "export.json").read_text())
    assert [f["passed"] for f in report["files"]] == [True, False]


def test_profile_edge_cpu_writes_only_int8_and_no_engine(run_dir, capsys):
    out = run_dir / "out3"
    code, stdout, _ = run_cli(["export", run_dir / "run" / "best.pt", "-o", out, "--profile", "edge-cpu",
                               *LENIENT_INT8], capsys)
    assert code == 0, stdout
    assert listing(out) == ["export.json", "model.int8.onnx"]
    assert json.loads((out / "export.json").read_text())["engine"]["reason"] == "--no-trt"


def test_explicit_trt_without_tensorrt_keeps_onnx_and_exits_1(run_dir, capsys, monkeypatch):
    monkeypatch.setattr("bonedeploy.export.tensorrt.tensorrt_available", lambda: (False, "TensorRT is not installed here"))
    out = run_dir / "out4"
    code, _, err = run_cli(["export", run_dir / "run" / "best.pt", "-o", out, "--precision", "fp32", "--trt"], capsys)
    assert code == 1 and "no engine built: TensorRT is not installed here" in err
    assert f"bonedeploy export {out / 'model.onnx'}" in err
    assert (out / "model.onnx").is_file()


def test_a_failed_engine_build_is_one_line_on_the_terminal_and_whole_in_the_report(run_dir, capsys,
                                                                                   monkeypatch):
    """Tests our glue only: TensorRT is not here, so a stand-in build function raises the kind of
    multi-line RuntimeError TensorRT's builder does; no engine is built or run."""
    lines = ["[network.cpp::addInput::1234] Error Code 3: API Usage Error",
             "  (Parameter check failed, condition: inName != knownInputName)",
             "  the real cause is on this third line"]

    def failing_build(*args, **kwargs):
        raise RuntimeError("\n".join(lines))

    monkeypatch.setattr("bonedeploy.export.tensorrt.tensorrt_available", lambda: (True, ""))
    monkeypatch.setattr("bonedeploy.export.tensorrt.build_engine", failing_build)
    out = run_dir / "out-trt-error"
    code, _, err = run_cli(["export", run_dir / "run" / "best.pt", "-o", out, "--precision", "fp32"], capsys)
    assert code == 1 and err.count("\n") == 1
    assert lines[0] in err and lines[2] not in err
    engine = json.loads((out / "export.json").read_text())["engine"]
    assert engine["built"] is False and "\n" not in engine["error"]
    detail = engine["error_detail"]
    assert detail["type"] == "RuntimeError" and detail["message"] == "\n".join(lines)
    tb = "".join(detail["traceback"])
    assert "Traceback (most recent call last)" in tb and "failing_build" in tb and lines[2] in tb
    assert (out / "model.onnx").is_file() and not (out / "model.trt").exists()


def test_quiet_prints_the_report_line_only(run_dir, capsys):
    out = run_dir / "out-quiet"
    code, stdout, err = run_cli(["export", run_dir / "run" / "best.pt", "-o", out, "--precision", "fp32",
                                 "--no-trt", "-q"], capsys)
    assert code == 0 and err == ""
    assert stdout.splitlines() == [f"report: {out / 'export.json'}"]


def test_an_option_beats_the_profile(run_dir, capsys):
    out = run_dir / "out-profile-override"
    code, stdout, _ = run_cli(["export", run_dir / "run" / "best.pt", "-o", out, "--profile", "edge-cpu",
                               "--precision", "fp32", "-q"], capsys)
    assert code == 0, stdout
    assert listing(out) == ["export.json", "model.onnx"]  # edge-cpu alone writes int8 only


def _bad_checkpoints(tmp_path):
    import torch

    good = make_checkpoint(tmp_path / "good.pt")
    trunc = tmp_path / "truncated.pt"
    trunc.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    foreign = tmp_path / "foreign.pt"
    torch.save({"weights": torch.zeros(2)}, foreign)
    pickled = tmp_path / "pickled.pt"
    torch.save({"format": "bonedeploy.checkpoint/1", "obj": Path("x")}, pickled)
    return {"truncated.pt": (trunc, "unreadable or truncated"), "foreign.pt": (foreign, "not a bonedeploy checkpoint"),
            "pickled.pt": (pickled, "refused by torch.load(weights_only=True)")}


def test_bad_checkpoints_fail_on_one_line_and_leave_nothing(tmp_path, capsys):
    for name, (path, cause) in _bad_checkpoints(tmp_path).items():
        out = tmp_path / f"out-{name}"
        code, _, err = run_cli(["export", path, "-o", out], capsys)
        assert code == 1, name
        assert err.startswith(f"error: {path}: {cause}") and err.count("\n") == 1, err
        assert not out.exists() or listing(out) == []


def test_bad_onnx_input_names_file_and_cause(tmp_path, capsys):
    import onnx

    from onnxkit import tiny_onnx_classifier

    proto = onnx.load(str(tiny_onnx_classifier(tmp_path / "ok.onnx")))
    proto.graph.node[0].input[0] = "missing"
    onnx.save(proto, str(tmp_path / "broken.onnx"))
    code, _, err = run_cli(["export", tmp_path / "broken.onnx"], capsys)
    assert code == 1 and err.startswith(f"error: {tmp_path / 'broken.onnx'}: fails the ONNX checker")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["broken.onnx", "ok.onnx"]


def test_int8_without_calibration_images_writes_nothing(tmp_path, capsys):
    ckpt = make_checkpoint(tmp_path / "run" / "best.pt")  # no recorded split
    code, _, err = run_cli(["export", ckpt, "--precision", "fp32,int8"], capsys)
    assert code == 1 and "int8 needs calibration images" in err and "--calib DIR" in err
    assert listing(tmp_path / "run") == ["best.pt"]
    few = make_tree(tmp_path / "few", per_class=4)
    code, _, err = run_cli(["export", ckpt, "--precision", "int8", "--calib", few], capsys)
    assert code == 1 and "needs at least 32 images, found 8" in err
    assert listing(tmp_path / "run") == ["best.pt"]


@pytest.mark.parametrize("args, says", [
    (["--precision", "fp32,bf16"], "valid precisions: fp32, fp16, int8"),
    (["--batch", "8,1,32"], "1 <= MIN <= OPT <= MAX"),
    (["--opset", "12"], "valid opsets are 17..23"),
    (["--profile", "mars-rover"], "unknown export profile 'mars-rover'; available: edge-cpu, jetson, server-gpu"),
    (["--precision", "fp32", "--engine-from", "fp16"], "not among the exported precisions"),
])
def test_bad_options_list_the_valid_choices(tmp_path, capsys, args, says):
    code, _, err = run_cli(["export", tmp_path / "best.pt", *args], capsys)
    assert code == 1 and says in err


def test_help_lists_the_options(capsys):
    code, out, _ = run_cli(["export", "--help"], capsys)
    for opt in ("--precision", "--trt", "--batch", "--calib", "--opset", "--data", "--gate-fp16", "--profile"):
        assert opt in out
    assert code == 0


PROFILES = {"edge-cpu", "jetson", "server-gpu"}


@pytest.mark.slow
def test_a_wheel_contains_the_profiles(tmp_path):
    """Build the wheel from a copy of the sources (no build/ or egg-info left in the checkout)."""
    import shutil
    import zipfile

    src = tmp_path / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, src / name)
    shutil.copytree(REPO / "bonedeploy", src / "bonedeploy", ignore=shutil.ignore_patterns("__pycache__"))
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                    "-w", str(tmp_path / "dist"), str(src)], check=True, timeout=600)
    (wheel,) = (tmp_path / "dist").glob("bonedeploy-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    assert {f"bonedeploy/export/profiles/{p}.toml" for p in PROFILES} <= names


def test_from_onnx_does_not_import_from_checkpoint():
    code = ("import sys, bonedeploy.export.from_onnx; "
            "assert 'bonedeploy.export.from_checkpoint' not in sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO, timeout=120)


def test_command_and_export_package_import_without_torch_or_onnx():
    code = ("import sys, bonedeploy.cli.app, bonedeploy.export, bonedeploy.artefacts.sidecar, "
            "bonedeploy.export.tensorrt, bonedeploy.eval.parity, bonedeploy.export.from_checkpoint; "
            "bad = [m for m in ('torch', 'onnx', 'tensorrt', 'onnxruntime') if m in sys.modules]; "
            "assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO, timeout=120)


@pytest.mark.slow
def test_vgg8_end_to_end_on_synthetic_radiographs(tmp_path, capsys):
    """A seed architecture, no data on disk: the parity set is generated synthetic radiographs."""
    ckpt = make_checkpoint(tmp_path / "run" / "best.pt", model="vgg8")
    code, stdout, _ = run_cli(["export", ckpt, "--parity-n", "8", "-q"], capsys)
    assert code == 0, stdout
    report = json.loads((tmp_path / "run" / "export.json").read_text())
    assert report["parity_inputs"]["kind"] == "synthetic" and report["parity_inputs"]["n"] == 8
    fp32, fp16 = report["files"]
    assert fp32["parity"]["max_abs_dprob"] <= 1e-4 and fp16["parity"]["max_abs_dprob"] <= 1e-2


def test_repair_is_on_for_int8_and_prints_what_it_kept(tmp_path, capsys):
    """The planted tiny_outlier model (tests/precisionkit.py): plain int8 fails, the repair passes."""
    from precisionkit import outlier_checkpoint

    ckpt = outlier_checkpoint(tmp_path / "planted.pt", make_tree(tmp_path / "data", per_class=40), planted=True)
    code, stdout, _ = run_cli(["export", ckpt, "-o", tmp_path / "out", "--precision", "fp32,int8", "--no-trt"], capsys)
    text = " ".join(stdout.split())
    assert code == 0, stdout
    assert "model.int8.onnx: repaired after" in text and "kept float: node_conv2d (Conv, layer 0)" in text
    code, _, err = run_cli(["export", ckpt, "-o", tmp_path / "bad", "--repair", "bf16"], capsys)
    assert code == 1 and "--repair bf16: valid: off, fp16, int8" in err
