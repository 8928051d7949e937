"""The options several commands share: one declaration and one meaning each, and every default
read from the library.

Each factory returns a fresh ``typer.Option`` (typer needs one object per parameter). An option
whose default a library config owns is declared ``None``: the CLI passes None and the config fills
in its own default (``bonedeploy.util.defaults``). ``--help`` shows that default through a
``LibraryDefault``, read only when help is rendered (the owning module may import torch).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from importlib import import_module
from pathlib import PurePath
from typing import Any, Callable

import typer

DEBUG_ENV = "BONEDEPLOY_DEBUG"
QUIET_HELP = ("Print only warnings, errors and the final line (what was written where): no progress "
              "bars, step logs, epoch lines or tables. Without it, output to a pipe or a file gets plain "
              "lines and no bars.")
DEBUG_HELP = (f"On an error, print the full traceback with its causes instead of one line (or set "
              f"{DEBUG_ENV}=1).")


@dataclass(frozen=True)
class LibraryDefault:
    """Where a default lives: ``attr`` in ``module`` (``"Config.field"`` reads a dataclass field's
    default, a function is called), then ``pick`` applied to it."""

    module: str
    attr: str
    pick: Callable[[Any], Any] | None = None

    def value(self) -> Any:
        obj: Any = import_module(self.module)
        for part in self.attr.split("."):
            fields = getattr(obj, "__dataclass_fields__", None)
            if isinstance(obj, type) and fields and part in fields:
                from bonedeploy.util.defaults import default_of

                obj = default_of(obj, part)
            else:
                obj = getattr(obj, part)
        if callable(obj) and not isinstance(obj, type):
            obj = obj()
        return obj if self.pick is None else self.pick(obj)

    def text(self) -> str:
        return show(self.value())


def show(value: Any) -> str:
    """A default as it is typed on the command line: ``1,8,32`` for a tuple."""
    if isinstance(value, (tuple, list)):
        return ",".join(map(show, value))
    if isinstance(value, PurePath):
        return str(value)
    if hasattr(value, "to_dict") and not isinstance(value, type):  # e.g. BatchProfile
        return ",".join(map(str, value.to_dict().values()))
    return str(value)


def lib(module: str, attr: str, pick: Callable[[Any], Any] | None = None) -> LibraryDefault:
    return LibraryDefault(module, attr, pick)


@dataclass(frozen=True)
class Meta:
    """What ``BonedeployCommand`` reads off a declaration (typer itself ignores it)."""

    shared: str | None = None  # the factory's name: one meaning wherever the option appears
    library_default: LibraryDefault | None = None
    comma_list: bool = False  # several values go in one comma-separated value


def option(*decls: str, help: str, default_from: LibraryDefault | None = None, shared: str | None = None,
           comma_list: bool = False, default: Any = None, **kwargs: Any) -> Any:
    """``typer.Option`` passing None unless given; ``--help`` shows ``default_from``'s value."""
    info = typer.Option(default, *decls, help=help, **kwargs)
    info.bonedeploy = Meta(shared, default_from, comma_list)
    return info


def meta(info: Any) -> Meta:
    return getattr(info, "bonedeploy", None) or Meta()


# --- the shared options -------------------------------------------------------------------
def quiet() -> Any:
    return option("--quiet", "-q", help=QUIET_HELP, default=False, shared="quiet")


def debug() -> Any:
    """On the root (``bonedeploy --debug CMD``); ``BonedeployCommand`` adds it to every command."""
    return option("--debug", help=DEBUG_HELP, default=False, shared="debug")


def device(default_from: LibraryDefault | None = None) -> Any:
    return option("--device", help="Where the model runs: auto (a CUDA GPU when there is one), cpu "
                  "or cuda.", default_from=default_from, shared="device")


def precision(choices: str, default_from: LibraryDefault | None = None) -> Any:
    return option("--precision", help=f"Numeric precision the model computes in: {choices}.",
                  default_from=default_from, shared="precision")


def precisions(choices: str, default_from: LibraryDefault | None = None) -> Any:
    """``export``: several precisions, one file each."""
    return option("--precision", help=f"Numeric precisions to write, one file each, comma-separated: "
                  f"{choices}.", default_from=default_from, shared="precision", comma_list=True)


def workers(what: str, default_text: str) -> Any:
    """Processes that ``what`` (decode, render), in parallel."""
    return option("--workers", "-j", help=f"Processes that {what} ({default_text}).", shared="workers")


def batch_size(what: str, default_from: LibraryDefault | None = None) -> Any:
    return option("--batch-size", "-b", help=f"Images per batch: {what}.", default_from=default_from,
                  shared="batch-size")


def out(help: str, default_from: LibraryDefault | None = None, required: bool = False) -> Any:
    """Where the command writes its result (a file or a folder, as ``help`` says)."""
    return option("--out", "-o", help=help, default_from=default_from, shared="out",
                  default=... if required else None)


def backend(choices: str, how_default: str, default_from: LibraryDefault | None = None) -> Any:
    """The one runtime that runs the model."""
    return option("--backend", help=f"The runtime that runs the model: {choices}. {how_default}",
                  default_from=default_from, shared="backend")


def backends(choices: str, how_default: str) -> Any:
    """``bench``: several runtimes."""
    return option("--backend", help=f"The runtimes that run the model, comma-separated: {choices}. "
                  f"{how_default}", shared="backend", comma_list=True)


def host(default_from: LibraryDefault, note: str = "") -> Any:
    """The address a server binds."""
    return option("--host", help=f"Address to bind (0.0.0.0: every interface).{' ' + note if note else ''}",
                  default_from=default_from, shared="host")


def provider() -> Any:
    return option("--provider", help="onnxruntime execution provider: cpu, cuda or tensorrt "
                  "(default: the best available).", shared="provider")


def seed(what: str, default_from: LibraryDefault) -> Any:
    return option("--seed", help=f"Random seed: {what}.", default_from=default_from, shared="seed")


def overwrite(what: str) -> Any:
    return option("--overwrite", help=f"Replace {what}.", default=False, shared="overwrite")


def difficulty(default_from: LibraryDefault) -> Any:
    return option("--difficulty", help="How subtle the synthetic fractures are: easy, medium or hard.",
                  default_from=default_from, shared="difficulty")


def epochs(what: str) -> Any:
    return option("--epochs", help=f"Training epochs: {what}.", shared="epochs")


def val() -> Any:
    return option("--val", help="A separate validation image folder instead of the seeded stratified "
                  "split of DATA.", shared="val")


def skip_bad() -> Any:
    return option("--skip-bad", default=False, help="Leave unreadable images out (they are listed in the "
                  "checkpoint and report) instead of stopping.", shared="skip-bad")


def force(what: str) -> Any:
    """``train``/``calibrate``: fit the temperature and the operating point below the minimum set size."""
    return option("--force", default=False, help=f"Fit the temperature and the operating point even when "
                  f"{what} is below the minimum sizes (the card records it).", shared="force")


def data(what: str) -> Any:
    """A labelled image folder (one sub-folder per class)."""
    return option("--data", help=f"Labelled image folder (Fractured/, Normal/): {what}.", shared="data")


def parity_n() -> Any:
    return option("--parity-n", help="At most this many parity images (default: every image of the "
                  "parity set).", shared="parity-n")


def target_sensitivity() -> Any:
    return option("--target-sensitivity", help="Choose the operating point: the highest threshold on "
                  "calibrated p(Fractured) whose sensitivity is >= S, e.g. 0.95 (default: argmax).",
                  shared="target-sensitivity")


def ood_fpr() -> Any:
    """``train``/``calibrate``: the out-of-distribution gate's target."""
    return option("--ood-fpr", help="Share of in-distribution images the out-of-distribution gate may "
                  "refuse: its threshold is set on the validation images (or --data) for it (see "
                  "docs/ood.md).", default_from=lib("bonedeploy.eval.ood", "DEFAULT_FPR"), shared="ood-fpr")


def threshold() -> Any:
    return option("--threshold", help="Decide Fractured when calibrated p(Fractured) >= T, instead of "
                  "the model card's operating point (argmax when it has none).", shared="threshold")


def name(default_from: LibraryDefault) -> Any:
    return option("--name", help="Model name on the Triton server: NAME takes tensors, NAME_file "
                  "file bytes.", default_from=default_from, shared="name")


# --- state of the run -----------------------------------------------------------------------
_state = {"debug": False}


def set_debug(value: bool) -> None:
    _state["debug"] = bool(value)


def debug_requested() -> bool:
    return _state["debug"] or os.environ.get(DEBUG_ENV, "").strip().lower() in ("1", "true", "yes", "on")


_argv: list[str] | None = None  # set by ``main(argv)``: called in-process, sys.argv is the caller's


def set_argv(argv: list[str] | None) -> None:
    global _argv
    _argv = None if argv is None else ["bonedeploy", *map(str, argv)]


def invocation() -> str:
    """The command line this run records: ``shlex.join(sys.argv)``, or ``bonedeploy ARGV`` for
    ``main(argv)``."""
    from bonedeploy.util.machine import command_line

    return command_line(_argv)
