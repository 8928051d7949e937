"""``--debug`` / BONEDEPLOY_DEBUG=1: the full traceback with its chained causes; else one line."""

import pytest

from bonedeploy.cli.app import main


@pytest.fixture
def bad_engine(tmp_path):
    from PIL import Image

    (tmp_path / "imgs").mkdir()
    Image.new("L", (40, 40)).save(tmp_path / "imgs" / "a.png")
    (tmp_path / "bad.onnx").write_text("not a protobuf")
    return ["infer", "--engine", str(tmp_path / "bad.onnx"), str(tmp_path / "imgs"),
            "--out", str(tmp_path / "p.csv"), "--workers", "0"]


def run(args, capsys):
    with pytest.raises(SystemExit) as info:
        main(args)
    return info.value.code, capsys.readouterr().err


def test_without_debug_the_error_is_one_line(bad_engine, capsys, monkeypatch):
    monkeypatch.delenv("BONEDEPLOY_DEBUG", raising=False)
    code, err = run(bad_engine, capsys)
    assert code == 1 and "Traceback" not in err
    assert err.strip().startswith("error: ") and "onnxruntime cannot load it" in err


@pytest.mark.parametrize("how", ["flag", "flag after the command", "env"])
def test_debug_prints_the_traceback_with_its_cause(bad_engine, capsys, monkeypatch, how):
    if how == "env":
        monkeypatch.setenv("BONEDEPLOY_DEBUG", "1")
        args = bad_engine
    else:
        monkeypatch.delenv("BONEDEPLOY_DEBUG", raising=False)
        args = ["--debug", *bad_engine] if how == "flag" else [*bad_engine, "--debug"]
    code, err = run(args, capsys)
    assert code == 1 and "Traceback (most recent call last)" in err
    assert "The above exception was the direct cause of the following exception" in err  # the cause
    assert "ArtefactError" in err and err.rstrip().splitlines()[-1].startswith("error: ")


def test_debug_does_not_outlive_its_run(bad_engine, capsys, monkeypatch):
    monkeypatch.delenv("BONEDEPLOY_DEBUG", raising=False)
    assert "Traceback" in run([*bad_engine, "--debug"], capsys)[1]
    assert "Traceback" not in run(bad_engine, capsys)[1]
