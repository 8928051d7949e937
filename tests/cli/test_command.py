"""``BonedeployCommand``, generated over every command: help reads as written (paragraphs whole,
square brackets kept), ``--debug`` after the command, and a repeated option refused."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from bonedeploy.cli.app import COMMANDS, app
from bonedeploy.cli.command import refuse_repeats, unwrap
from bonedeploy.errors import ConfigError
from clikit import click_commands, description, help_text, options

NAMES = [name for name, _ in COMMANDS]
TEXT_WIDTH = 80 - 2  # typer pads the description by one column each side


def test_bench_help_keeps_its_sentence_on_one_line():
    """The reported bug: "...(onnxruntime, and OpenVINO when installed),\\n OpenVINO IR and TensorRT."."""
    lines = description(help_text("bench", columns=200))
    assert any("(onnxruntime, and OpenVINO when installed), OpenVINO IR and TensorRT." in ln for ln in lines), lines


@pytest.mark.parametrize("name", NAMES)
def test_help_lines_break_only_where_80_columns_force_them(name):
    """Greedy wrapping: a line ends early only at a paragraph's end or before a list item."""
    lines = description(help_text(name, columns=80))
    for line, nxt in zip(lines, lines[1:]):
        if not line or not nxt or is_list_item(nxt):
            continue
        assert len(line) + 1 + len(nxt.split()[0]) > TEXT_WIDTH, f"{name}: cut after {line!r}"


@pytest.mark.parametrize("name", NAMES)
def test_help_paragraphs_end_at_sentence_ends(name):
    """Wide enough that nothing wraps, every description line is a whole paragraph (or list item)."""
    for line in description(help_text(name, columns=1000)):
        if line and not is_list_item(line):
            assert line[-1] in ".:)", f"{name}: {line!r}"


def is_list_item(line: str) -> bool:
    return line[:1].isdigit() or line.startswith(("- ", "* "))


@pytest.mark.parametrize("name", NAMES)
def test_square_brackets_in_help_are_text(name):
    """Every option's help as declared appears in --help: rich markup used to eat "[serve]" and
    "[default: 1,8,32]"."""
    out = " ".join(help_text(name, columns=1000).split())
    for param, info in options(name).items():
        assert " ".join(info.help.split()) in out, f"{name} {param}"
    doc = click_commands()[name].help
    assert "\\[" not in out and ("[" not in doc or "[" in out)


def test_serve_help_names_its_extra():
    assert "Needs the [serve] extra." in " ".join(help_text("serve", columns=200).split())


def test_unwrap_joins_a_paragraphs_lines_and_keeps_b_blocks():
    doc = "First line\n    of one.\n\n    Second\n    paragraph.\n\n    \bCodes:\n    0  ok\n    1  failed"
    assert unwrap(doc) == "First line of one.\n\nSecond paragraph.\n\nCodes:\n0  ok\n1  failed"


def value_options(name: str):
    """(flag, takes a comma list) for every option of the command that takes one value."""
    cmd = click_commands()[name]
    for p in cmd.params:
        if p.param_type_name == "option" and not (p.is_flag or p.multiple or p.count):
            yield max(p.opts, key=len), p.comma_list


@pytest.mark.parametrize("name", NAMES)
def test_a_repeated_option_is_refused_before_the_command_runs(name):
    runner = CliRunner()
    for flag, comma in value_options(name):
        r = runner.invoke(app, [name, flag, "1", flag, "2"])
        assert r.exit_code == 1 and isinstance(r.exception, ConfigError), (flag, r.output)
        message = str(r.exception)
        assert message.startswith(f"{flag} was given 2 times (1, 2)")
        assert (f"comma-separated list: {flag} 1,2" in message) == comma, message
        assert comma or message.endswith("it takes one value")


def test_bench_backend_twice_shows_the_comma_form():
    r = CliRunner().invoke(app, ["bench", "--backend", "onnxruntime", "--backend=openvino"])
    assert r.exit_code == 1
    assert str(r.exception) == ("--backend was given 2 times (onnxruntime, openvino); give several values "
                                "as one comma-separated list: --backend onnxruntime,openvino")


def test_short_and_long_spellings_count_together_and_repeatable_options_stay_repeatable():
    cmd = click_commands()["infer"]
    with pytest.raises(ConfigError, match="--batch-size was given 2 times"):
        refuse_repeats(cmd, cmd.make_context("infer", ["-e", "m.onnx", "x"]), ["-b", "3", "--batch-size=4"])
    refuse_repeats(cmd, cmd.make_context("infer", ["-e", "m.onnx", "x"]),
                   ["--backend-option", "threads=1", "--backend-option", "streams=1"])


@pytest.mark.parametrize("name", NAMES)
def test_every_command_takes_debug(name):
    assert "--debug" in {o for p in click_commands()[name].params for o in p.opts}
