"""``bonedeploy calibrate CHECKPOINT``: fit the temperature and choose the operating point."""

from __future__ import annotations

from pathlib import Path

import typer

from bonedeploy.cli import options as opts

COMMAND_KWARGS = {"no_args_is_help": True}


def command(
    checkpoint: Path = typer.Argument(..., help="A bonedeploy checkpoint (best.pt)."),
    data: Path = opts.data("to fit on, instead of the validation split recorded in the checkpoint"),
    target_sensitivity: float = opts.target_sensitivity(),
    out: Path = opts.out("Write the calibrated checkpoint here (default: rewrite CHECKPOINT in place, "
                         "atomically; the old values go to the card's history)."),
    force: bool = opts.force("the calibration set"),
    ood_fpr: float = opts.ood_fpr(),
) -> None:
    """Fit temperature scaling (NLL) and choose the operating point; store both in the card.

    Also refits the out-of-distribution gate: on the training split's features with its threshold
    on the validation split or, with --data, on half of DIR with its threshold on the other half.
    Writes calibration.md/json and reliability.png beside the output checkpoint. The temperature
    and the threshold are fitted on the same images; --data gives a separate calibration set.
    Re-export afterwards so that the ONNX files and engines carry the new values."""
    from rich.console import Console

    from bonedeploy.eval.calibration import CalibrateConfig, calibrate_checkpoint

    result = calibrate_checkpoint(CalibrateConfig(checkpoint, data, target_sensitivity, out, force, ood_fpr))
    c, op = result.fit.calibration, result.fit.operating_point
    console = Console()
    for note in result.fit.notes():
        console.print(f"warning: {note}", highlight=False, soft_wrap=True)
    console.print(f"temperature {result.fit.temperature:.4f} on {c['n']} images ({c['fitted_on']})",
                  highlight=False, soft_wrap=True)
    for k in ("nll", "ece", "brier"):
        console.print(f"  {k:<6} {c['before'][k]:.4f} -> {c['after'][k]:.4f}", highlight=False, soft_wrap=True)
    console.print(f"operating point: {op.describe()}", highlight=False, soft_wrap=True)
    for note in result.ood.notes:
        console.print(f"warning: {note}", highlight=False, soft_wrap=True)
    console.print(f"out-of-distribution gate: {result.ood.gate.describe()}", highlight=False, soft_wrap=True)
    if result.replaced:
        console.print("previous values kept in the card's history", highlight=False, soft_wrap=True)
    console.print(f"-> {result.out}; report {result.reports['md']}, {result.reports['png']}", highlight=False, soft_wrap=True)
    console.print("note: the temperature and the threshold were fitted on the same images; "
                  "re-export to carry them into the ONNX files", highlight=False, soft_wrap=True)
