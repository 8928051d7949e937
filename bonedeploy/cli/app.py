"""The ``bonedeploy`` command line: an adapter. Each command lives in ``bonedeploy/cli/commands/``,
builds a typed config from its options and calls one library function. Options shared by several
commands are declared once, in ``options``; ``command.BonedeployCommand`` gives every command the
same help rendering, ``--debug`` and refusal of repeated options.

Command modules must import cheaply (no torch at module level): ``infer`` on an ONNX file runs on
machines without torch.
"""

from __future__ import annotations

import importlib
import sys
import traceback

import typer
from rich.console import Console
from rich.markup import escape

from bonedeploy import __version__
from bonedeploy.cli import options
from bonedeploy.cli.command import BonedeployCommand
from bonedeploy.cli.options import DEBUG_ENV, debug_requested, set_argv  # noqa: F401 (re-exported)
from bonedeploy.errors import BonedeployError

app = typer.Typer(
    name="bonedeploy",
    help="Train, export (ONNX, TensorRT), run and benchmark bone-radiograph classifiers.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode="rich",
)
err_console = Console(stderr=True)

# (command name, module in bonedeploy.cli.commands). Each module defines ``command``.
COMMANDS: list[tuple[str, str]] = [
    ("synth", "synth"),
    ("models", "models"),
    ("train", "train"),
    ("sweep", "sweep"),
    ("export", "export"),
    ("compare", "compare"),
    ("infer", "infer"),
    ("merge", "merge"),
    ("calibrate", "calibrate"),
    ("explain", "explain"),
    ("bench", "bench"),
    ("serve", "serve"),
    ("listen", "listen"),
    ("demo", "demo"),
]


def _version(value: bool) -> None:
    if value:
        typer.echo(f"bonedeploy {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True,
                                 help="Print the version and exit."),
    debug: bool = options.debug(),
) -> None:
    """bonedeploy: the seed's bone-radiograph classifiers, from training to a deployed engine."""
    if debug:
        options.set_debug(True)


for _name, _module in COMMANDS:
    _mod = importlib.import_module(f"bonedeploy.cli.commands.{_module}")
    app.command(_name, cls=BonedeployCommand, **getattr(_mod, "COMMAND_KWARGS", {}))(_mod.command)


def main(argv: list[str] | None = None) -> None:
    options.set_debug(False)
    set_argv(argv)
    try:
        app(args=argv)
    except BonedeployError as e:
        if debug_requested():  # the whole chain: what a bug report needs
            sys.stderr.write("".join(traceback.format_exception(e)))
        err_console.print(f"[bold red]error:[/] {escape(str(e))}", highlight=False, soft_wrap=True)
        sys.exit(e.exit_code)


if __name__ == "__main__":
    main()
