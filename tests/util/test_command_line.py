"""Run records hold the command as typed: ``shlex.join(sys.argv)`` through one helper."""

import json
import shlex
import sys

import pytest

from bonedeploy.cli.app import main
from bonedeploy.util.machine import command_line
from onnxkit import tiny_onnx_classifier


def test_command_line_quotes_like_a_shell(monkeypatch):
    monkeypatch.setattr(sys, "argv", ["bonedeploy", "infer", "my images/", "--out", "p.csv"])
    assert command_line() == "bonedeploy infer 'my images/' --out p.csv"
    assert shlex.split(command_line()) == sys.argv


def test_bench_json_records_the_typed_command(tmp_path, monkeypatch, capsys):
    run = tmp_path / "run dir"
    tiny_onnx_classifier(run / "model.onnx")
    argv = ["bench", "--dir", str(run), "--no-parity", "--mode", "compute", "--batch-sizes", "1",
            "--duration", "0", "--warmup", "0", "--min-iters", "2", "--cold-start-runs", "0", "--json", str(tmp_path / "b.json"), "-q"]
    monkeypatch.setattr(sys, "argv", ["pytest"])  # in-process: main(argv) is the command
    with pytest.raises(SystemExit) as info:
        main(argv)
    assert info.value.code in (0, None), capsys.readouterr()
    assert json.loads((tmp_path / "b.json").read_text())["command"] == shlex.join(["bonedeploy", *argv])


def test_the_process_command_line_when_run_as_a_program(tmp_path, monkeypatch):
    from bonedeploy.cli.options import invocation, set_argv

    monkeypatch.setattr(sys, "argv", ["/venv/bin/bonedeploy", "sweep", "r.toml", "my data"])
    set_argv(None)
    assert invocation() == "/venv/bin/bonedeploy sweep r.toml 'my data'"
    set_argv(["sweep", "r.toml"])
    assert invocation() == "bonedeploy sweep r.toml"
    set_argv(None)
