"""The CLI as tests walk it: every command's click object and its declared typer options."""

from __future__ import annotations

import importlib
import inspect
from typing import Any

import pytest
from typer.testing import CliRunner

from bonedeploy.cli.app import COMMANDS, app, main


def click_commands() -> dict[str, Any]:
    """Command name -> the click command typer builds (what ``--help`` and parsing use)."""
    import typer.main

    return dict(typer.main.get_command(app).commands)


def declarations(name: str) -> dict[str, Any]:
    """Parameter name -> its ``typer.Option``/``typer.Argument`` as the command module declares it."""
    module = importlib.import_module(f"bonedeploy.cli.commands.{dict(COMMANDS)[name]}")
    return {n: p.default for n, p in inspect.signature(module.command).parameters.items()}


def options(name: str) -> dict[str, Any]:
    """Parameter name -> declaration, options only."""
    return {n: d for n, d in declarations(name).items() if type(d).__name__ == "OptionInfo"}


def flags(info: Any) -> tuple[str, ...]:
    """Every spelling of an option, e.g. ("--out", "-o") or ("--parity", "--no-parity")."""
    return tuple(s for d in info.param_decls for s in d.split("/") if s.startswith("-"))


def help_text(*args: str, columns: int) -> str:
    r = CliRunner().invoke(app, [*args, "--help"], env={"COLUMNS": str(columns), "TERMINAL_WIDTH": None})
    assert r.exit_code == 0, r.output
    return r.output


def description(help_output: str) -> list[str]:
    """The command's own text in ``--help``: the lines between the usage line and the first panel."""
    lines = help_output.splitlines()
    start = next(i for i, ln in enumerate(lines) if "Usage:" in ln) + 1
    end = next(i for i, ln in enumerate(lines) if ln.lstrip().startswith("╭"))
    return [ln.strip() for ln in lines[start:end]]


def run_cli(args, capsys) -> tuple[int, str, str]:
    """``bonedeploy ARGS`` in this process: (exit code, stdout, stderr)."""
    with pytest.raises(SystemExit) as info:
        main([str(a) for a in args])
    out = capsys.readouterr()
    code = info.value.code if isinstance(info.value.code, int) else (0 if info.value.code is None else 1)
    return code, out.out, out.err
