"""Option defaults come from the config dataclasses, so each default is declared once."""

from __future__ import annotations

import dataclasses
from typing import Any


def default_of(config_cls: type, name: str) -> Any:
    """The default a config dataclass declares for ``name`` (shown by ``--help``)."""
    f = config_cls.__dataclass_fields__[name]
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    raise KeyError(f"{config_cls.__name__}.{name} has no default")


_argv: list[str] | None = None  # set by ``main(argv)``: called in-process, sys.argv is the caller's


def set_argv(argv: list[str] | None) -> None:
    global _argv
    _argv = None if argv is None else ["bonedeploy", *map(str, argv)]


def invocation() -> str:
    """The command line this run records: ``shlex.join(sys.argv)``, or ``bonedeploy ARGV`` for
    ``main(argv)``."""
    from bonedeploy.util.machine import command_line

    return command_line(_argv)
