"""``bonedeploy sweep RECIPE DATA``: every run of a recipe (train/seed.toml), then the results table."""

from __future__ import annotations

from pathlib import Path

import typer

from bonedeploy.cli import options as opts
from bonedeploy.cli.options import lib, option
from bonedeploy.errors import ConfigError

COMMAND_KWARGS = {"no_args_is_help": True}
_SWEEP = "bonedeploy.training.sweep"


def parse_only(text: str | None) -> tuple[str, ...] | None:
    if text is None:
        return None
    names = tuple(s.strip() for s in text.split(",") if s.strip())
    if not names:
        raise ConfigError(f"--only {text!r}: expected comma-separated run names, e.g. vgg8,resnet16")
    return names


def command(
    recipe: Path = typer.Argument(..., help="Sweep recipe (TOML), e.g. train/seed.toml.",
                                  show_default=False),
    data: Path = typer.Argument(..., help="Image folder with Fractured/ and Normal/.",
                                show_default=False),
    out: Path = opts.out("One folder per run is made here, plus results.md / results.csv.",
                         lib(_SWEEP, "SweepConfig.out")),
    val: Path = opts.val(),
    epochs: int = opts.epochs("every run trains this many (quick checks)"),
    epochs_scale: float = option("--epochs-scale", help="Scale every run's epochs, e.g. 0.1 (at least 1)."),
    only: str = option("--only", help="Run names to train, comma-separated.", comma_list=True),
    device: str = opts.device(lib(_SWEEP, "SweepConfig.device")),
    devices: str = option("--devices", help="GPUs to queue the runs over, comma-separated, e.g. 0,1,2,3: one "
                          "run per GPU at a time, each in its own process with its own log (OUT/RUN/train.log); "
                          "a failed run is recorded and the others go on. cpu (the default): one run after "
                          "the other in this process.", comma_list=True),
    precision: str = opts.precision("auto, fp32 or bf16, for every run (default: the recipe's, else auto)"),
    batch_size: int = opts.batch_size("images per training step, for every run (default: the recipe's)"),
    skip_bad: bool = opts.skip_bad(),
    workers: int = opts.workers("decode the images", "default: all cores"),
    quiet: bool = opts.quiet(),
) -> None:
    """Train every run of a sweep recipe and write the seed's results table beside ours.

    Finished runs are skipped and interrupted ones resumed; OUT/results.md and results.csv hold
    the seed's table format with the seed's numbers beside ours. With --devices, the exit status
    is 3 when a run failed (the table names it and its log)."""
    from bonedeploy.cli.options import invocation
    from bonedeploy.training import LineReporter, QuietReporter, RichReporter
    from bonedeploy.training.sweep import SweepConfig, run_sweep
    from bonedeploy.training.sweep_queue import parse_devices

    cfg = SweepConfig(
        recipe=str(recipe), data=str(data), out=out and str(out), val=str(val) if val else None,
        epochs=epochs, epochs_scale=epochs_scale, only=parse_only(only), device=device,
        precision=precision, batch_size=batch_size, skip_bad=skip_bad, workers=workers,
        quiet=quiet, command=invocation(), devices=parse_devices(devices),
    )
    line = QuietReporter() if quiet else LineReporter()
    result = run_sweep(cfg, reporter_for=lambda name: line if quiet else RichReporter(), log=line.message)
    failed = sorted(n for n, st in result.statuses.items() if st == "failed")
    if failed:
        line.warn(f"{len(failed)} run(s) failed: {', '.join(failed)} (see their train.log)")
    print(f"results: {result.out / 'results.md'}, {result.out / 'results.csv'}")  # the final line
    if result.exit_code:
        raise typer.Exit(result.exit_code)
