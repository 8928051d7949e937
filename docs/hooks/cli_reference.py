"""The CLI reference page, generated from the typer app so it cannot drift from ``--help``.

Used by the MkDocs hook (``mkdocs_hooks.py``) at build time and by ``tests/test_docs.py``. Walks
the click command tree typer builds (``typer.main.get_command``) by duck typing, so it works with
typer's vendored click (typer >= 0.2x) and with plain click alike.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

PROG = "bonedeploy"
_CODE_SPAN = re.compile(r"(``[^\n]*?``|`[^`\n]*`)")
_MARKDOWN_SPECIAL = re.compile(r"([\\*_\[\]|])")


@dataclass
class Param:
    names: str  # "--engine, -e" or "--parity / --no-parity" or "INPUTS..."
    kind: str  # "argument" or "option"
    value: str  # metavar, "" for flags
    default: str
    help: str
    flags: tuple[str, ...] = ()  # every option string, e.g. ("--parity", "--no-parity")


@dataclass
class Command:
    name: str  # "" for the root
    usage: str
    help: str
    params: list[Param] = field(default_factory=list)


def root_command(app: Any = None) -> Any:
    """The click command of the typer app (``bonedeploy.cli.app.app`` by default)."""
    import typer.main

    if app is None:
        from bonedeploy.cli.app import app
    return typer.main.get_command(app)


def walk(app: Any = None) -> list[Command]:
    """The root and every visible command, in the order the app registers them."""
    root = root_command(app)
    root_ctx = root.context_class(root, info_name=PROG)
    out = [describe(root, root_ctx, "")]
    for name, cmd in getattr(root, "commands", {}).items():
        if getattr(cmd, "hidden", False):
            continue
        out.append(describe(cmd, cmd.context_class(cmd, info_name=name, parent=root_ctx), name))
    return out


def describe(cmd: Any, ctx: Any, name: str) -> Command:
    params = [describe_param(p, ctx) for p in cmd.params if not getattr(p, "hidden", False)]
    return Command(name=name, usage=usage(ctx.command_path, params, hasattr(cmd, "commands")),
                   help=plain(cmd.help or ""), params=params)


def usage(path: str, params: list[Param], is_group: bool) -> str:
    """``bonedeploy infer [OPTIONS] INPUTS...``: click's usage line, with argument names in capitals."""
    words = [path, "[OPTIONS]"]
    for p in params:
        if p.kind == "argument":
            words.append(p.names if p.default == "required" else f"[{p.names}]")
    if is_group:
        words.append("COMMAND [ARGS]...")
    return " ".join(words)


def describe_param(p: Any, ctx: Any) -> Param:
    if p.param_type_name == "argument":
        nargs = "..." if p.nargs == -1 else ""
        return Param(names=f"{p.name.upper()}{nargs}", kind="argument", value=f"<{p.type.name}>",
                     default=default_text(p), help=plain(getattr(p, "help", None) or ""))
    flags = tuple(p.opts) + tuple(p.secondary_opts)
    names = ", ".join(sorted(p.opts, key=lambda s: (not s.startswith("--"), s)))
    if p.secondary_opts:
        names += " / " + ", ".join(p.secondary_opts)
    value = "" if getattr(p, "is_flag", False) else metavar(p, ctx)
    return Param(names=names, kind="option", value=value, default=default_text(p),
                 help=plain(p.help or ""), flags=flags)


def metavar(p: Any, ctx: Any) -> str:
    choices = getattr(p.type, "choices", None)
    if choices:
        return "|".join(map(str, choices))
    try:  # click >= 8.2 (and typer's vendored click) take the context
        return p.make_metavar(ctx)
    except TypeError:
        return p.make_metavar()


def default_text(p: Any) -> str:
    if p.required:
        return "required"
    shown = getattr(p, "show_default", None)
    if shown is False:
        return ""
    if isinstance(shown, str):
        return shown
    d = p.default
    if callable(d) or d is None or d == () or d == []:
        return ""
    if getattr(p, "is_flag", False):
        if p.secondary_opts:
            return p.opts[0] if d else p.secondary_opts[0]
        return ""  # a plain flag is off unless given
    if isinstance(d, (list, tuple)):
        return ", ".join(map(str, d))
    return str(d)


def plain(text: str) -> str:
    """What typer's rich help shows: the text with rich markup applied, as plain text."""
    from rich.errors import MarkupError
    from rich.text import Text

    try:
        return Text.from_markup(text).plain
    except MarkupError:
        return text


def escape(text: str) -> str:
    """Markdown-safe text; `code spans` are kept as they are (Markdown escapes their insides)."""
    parts = _CODE_SPAN.split(text)
    for i in range(0, len(parts), 2):
        s = parts[i].replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
        parts[i] = _MARKDOWN_SPECIAL.sub(r"\\\1", s)
    return "".join(p.replace("|", "\\|") if i % 2 else p for i, p in enumerate(parts))


def cell(text: str) -> str:
    return escape(text).replace("\n", "<br>") if text else ""


def code(text: str) -> str:
    return f"`{text}`" if text else ""


_LIST_LINE = re.compile(r"^([-*•]|\d+[.)]?)\s")


def paragraphs(text: str) -> str:
    """Help paragraphs, re-flowed; the line breaks of a list (e.g. exit codes) are kept."""
    out = []
    for block in (b for b in re.split(r"\n\s*\n", text) if b.strip()):
        lines = [ln.strip() for ln in block.strip("\n").splitlines()]
        para = escape(lines[0])
        for prev, line in zip(lines, lines[1:]):
            if _LIST_LINE.match(line) or prev.endswith(":"):
                para += "  \n"
            elif not prev.endswith("/"):  # "TIFF/" + "DICOM": one word broken at its slash
                para += " "
            para += escape(line)
        out.append(para)
    return "\n\n".join(out)


def render_command(c: Command) -> str:
    title = f"`{PROG} {c.name}`" if c.name else "Global options"
    anchor = c.name or "global-options"
    lines = [f"## {title} {{#{anchor}}}", "", paragraphs(c.help), "", "```text", c.usage, "```", ""]
    args = [p for p in c.params if p.kind == "argument"]
    opts = [p for p in c.params if p.kind == "option"]
    if args:
        lines += ["| argument | value | default | description |", "|---|---|---|---|"]
        lines += [f"| {code(p.names)} | {code(p.value)} | {cell(p.default)} | {cell(p.help)} |" for p in args]
        lines.append("")
    if opts:
        lines += ["| option | value | default | description |", "|---|---|---|---|"]
        lines += [f"| {code(p.names)} | {code(p.value)} | {cell(p.default)} | {cell(p.help)} |" for p in opts]
        lines.append("")
    return "\n".join(lines)


def render(app: Any = None) -> str:
    """The whole reference page, in Markdown."""
    commands = walk(app)
    index = "\n".join(f"| [`{c.name}`](#{c.name}) | {cell(first_sentence(c.help))} |"
                      for c in commands if c.name)
    head = [
        "# CLI reference",
        "",
        "Generated from the `bonedeploy` command itself when the site is built, so it lists exactly "
        "what `bonedeploy COMMAND --help` prints. Each command builds a typed config from its "
        "options and calls one library function; errors are one line naming the file and the "
        "cause (`--debug` or `BONEDEPLOY_DEBUG=1` prints the whole traceback). Every command "
        "also takes `--help`.",
        "",
        "| command | what it does |",
        "|---|---|",
        index,
        "",
    ]
    return "\n".join(head + [render_command(c) for c in commands])


def first_sentence(text: str) -> str:
    first = text.strip().split("\n\n")[0].replace("\n", " ")
    return first


if __name__ == "__main__":  # python docs/hooks/cli_reference.py > cli.md: to read it without a build
    print(render())
