"""``bonedeploy explain ENGINE INPUT... --out DIR``: Grad-CAM maps and labelled overlays."""

from __future__ import annotations

from pathlib import Path

import typer

from bonedeploy.cli import options as opts
from bonedeploy.cli.options import lib, option

COMMAND_KWARGS = {"no_args_is_help": True}
_EXPLAIN = "bonedeploy.explain.run"


def command(
    engine: Path = typer.Argument(..., help="best.pt (pytorch-grad-cam) or model.explain.onnx "
                                  "(in-graph map; no torch needed)."),
    inputs: list[Path] = typer.Argument(..., help="Image files and/or folders.", show_default=False),
    out: Path = opts.out("Folder for <stem>.npy and <stem>.png.", required=True),
    layer: str = option("--layer", help="Target layer (module name) (default: the family's: alexnet 14 = "
                        "last conv block, vgg the last ReLU, resnet layers)."),
    target: str = option("--target", help="predicted (the decision at the operating point) or a class "
                         "name, e.g. Fractured.", default_from=lib(_EXPLAIN, "ExplainConfig.target")),
    threshold: float = opts.threshold(),
    batch_size: int = opts.batch_size("images per model call", lib(_EXPLAIN, "ExplainConfig.batch_size")),
) -> None:
    """Grad-CAM maps and labelled overlays: where the model looked, one pair per image.

    Writes a map (float32 H x W in [0, 1], .npy) and an overlay (.png, labelled with the decision
    and the calibrated probability) per image. Unreadable images are reported; the others go on
    (exit 3 when some failed)."""
    from rich.console import Console
    from rich.markup import escape

    from bonedeploy.explain.run import ExplainConfig, explain

    result = explain(ExplainConfig(engine, tuple(inputs), out, layer, target, threshold, batch_size))
    console = Console()
    console.print(f"{len(result.written)} maps at layer {result.layer} -> {escape(str(result.out))} "
                  f"(decision: {result.decision['rule']}, {result.decision['threshold_source']})", highlight=False,
                  soft_wrap=True)
    for path, cause in result.errors:
        console.print(f"  [red]error[/] {escape(path)}: {escape(cause)}", highlight=False, soft_wrap=True)
    if result.errors:
        raise typer.Exit(3)
