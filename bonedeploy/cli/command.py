"""``BonedeployCommand``: what every command gets from one place instead of eleven.

- Help as written: a docstring paragraph is one paragraph (rich wraps it at the terminal's width;
  the docstring's own line breaks would cut sentences), a paragraph starting with ``\\b`` keeps
  its lines (click's convention), and square brackets are text, not rich markup
  (``[serve]`` and ``[default: 1,8,32]`` used to vanish).
- Defaults shown from the library (``options.LibraryDefault``), read when help is rendered.
- ``--debug`` after the command as well as before it.
- A repeated option is refused (exit 1, one line, as any bad option), never silently reduced to
  its last value; the message shows the comma form where the option takes a list.
"""

from __future__ import annotations

import inspect
import re
from typing import Any

from rich.markup import escape
from typer import _click
from typer._click.exceptions import UsageError
from typer.core import TyperCommand, TyperOption

from bonedeploy.cli import options
from bonedeploy.errors import ConfigError


def unwrap(text: str) -> str:
    """One line per paragraph, except ``\\b`` paragraphs, which keep their lines."""
    paragraphs = re.split(r"\n\s*\n", inspect.cleandoc(text or ""))
    return "\n\n".join(p[1:].strip("\n") if p.startswith("\b") else " ".join(s.strip() for s in p.splitlines())
                       for p in paragraphs if p.strip())


class Option(TyperOption):
    """A typer option that shows ``[default: X]`` (not ``(X)``) and may take X from the library."""

    library_default: options.LibraryDefault | None = None
    comma_list = False
    shared: str | None = None

    @property  # type: ignore[override]
    def show_default(self) -> bool | str:
        if self.library_default is not None:
            value = self.library_default.value()
            if isinstance(value, bool) and self.secondary_opts:  # --parity/--no-parity
                return (self.opts[0] if value else self.secondary_opts[0]).lstrip("-")
            return options.show(value)
        return self.__dict__.get("show_default", False)

    @show_default.setter
    def show_default(self, value: bool | str) -> None:
        self.__dict__["show_default"] = value

    def _get_default_string(self, *, ctx: Any, show_default_is_str: bool, default_value: Any) -> str:
        if show_default_is_str:
            return str(self.show_default)
        return super()._get_default_string(ctx=ctx, show_default_is_str=False, default_value=default_value)


class BonedeployCommand(TyperCommand):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs["help"] = escape(unwrap(kwargs.get("help") or ""))
        super().__init__(*args, **kwargs)
        infos = declarations(self.callback)
        for p in self.params:
            if p.help:
                p.help = escape(p.help)
            if isinstance(p, TyperOption):
                p.__class__ = Option  # same object, our display and metadata
                m = options.meta(infos.get(p.name))
                p.library_default, p.comma_list, p.shared = m.library_default, m.comma_list, m.shared
        self.params.append(debug_param())

    def parse_args(self, ctx: _click.Context, args: list[str]) -> list[str]:
        if not ctx.resilient_parsing:
            refuse_repeats(self, ctx, args)
        return super().parse_args(ctx, args)


def declarations(callback: Any) -> dict[str, Any]:
    """Parameter name -> its ``typer.Option``/``Argument`` (the function's defaults)."""
    if callback is None:
        return {}
    return {n: p.default for n, p in inspect.signature(callback).parameters.items()}


def debug_param() -> Option:
    info = options.debug()
    p = Option(param_decls=["--debug"], is_flag=True, default=False, expose_value=False,
               callback=lambda ctx, param, value: options.set_debug(value) if value else None,
               help=escape(info.help))
    p.shared = options.meta(info).shared
    return p


def refuse_repeats(cmd: _click.Command, ctx: _click.Context, args: list[str]) -> None:
    """Parse once with every single-value option collecting its values; more than one is refused."""
    parser = cmd.make_parser(ctx)
    single = {id(o): o for o in [*parser._long_opt.values(), *parser._short_opt.values()]
              if o.action == "store"}
    for o in single.values():
        o.action = "append"
    try:
        opts, _, _ = parser.parse_args(args=list(args))
    except UsageError:
        return  # the real parse reports it
    for o in single.values():
        values = opts.get(o.dest)
        if isinstance(values, list) and len(values) > 1:
            raise ConfigError(repeat_message(o.obj, values))


def repeat_message(param: Any, values: list[str]) -> str:
    flag = max(param.opts, key=len)
    given = ", ".join(map(str, values))
    if getattr(param, "comma_list", False):
        return (f"{flag} was given {len(values)} times ({given}); give several values as one "
                f"comma-separated list: {flag} {','.join(map(str, values))}")
    return f"{flag} was given {len(values)} times ({given}); it takes one value"
