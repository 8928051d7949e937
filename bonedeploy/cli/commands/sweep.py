"""``bonedeploy sweep RECIPE DATA``: every run of a recipe (train/seed.toml), then the results table."""

from __future__ import annotations

from pathlib import Path

import typer

from bonedeploy.errors import ConfigError

COMMAND_KWARGS = {"no_args_is_help": True}


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
    out: Path = typer.Option(Path("runs"), "--out", "-o", help="One folder per run is made here, "
                             "plus results.md / results.csv."),
    val: Path = typer.Option(None, "--val", help="A separate validation folder (default: the "
                             "seeded 8:2 split of DATA)."),
    epochs: int = typer.Option(None, "--epochs", help="Train every run for N epochs (quick checks)."),
    epochs_scale: float = typer.Option(None, "--epochs-scale", help="Scale every run's epochs, "
                                       "e.g. 0.1 (at least 1)."),
    only: str = typer.Option(None, "--only", help="Comma-separated run names to train."),
    device: str = typer.Option("auto", "--device", help="auto | cpu | cuda."),
    precision: str = typer.Option(None, "--precision", help="auto | fp32 | bf16 (default: auto)."),
    batch_size: int = typer.Option(None, "--batch-size", "-b", help="Override every run's batch size."),
    skip_bad: bool = typer.Option(False, "--skip-bad", help="Leave unreadable images out."),
    workers: int = typer.Option(None, "--workers", help="Image-decoding processes."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="One plain line per epoch (for logs)."),
) -> None:
    """Train every run of a sweep recipe and write the seed's results table beside ours.

    Finished runs are skipped and interrupted ones resumed; OUT/results.md and results.csv hold
    the seed's table format with the seed's numbers beside ours."""
    from bonedeploy.training.sweep import SweepConfig, run_sweep
    from bonedeploy.training import LineReporter, RichReporter
    from bonedeploy.cli.options import invocation

    cfg = SweepConfig(
        recipe=str(recipe), data=str(data), out=str(out), val=str(val) if val else None,
        epochs=epochs, epochs_scale=epochs_scale, only=parse_only(only), device=device,
        precision=precision, batch_size=batch_size, skip_bad=skip_bad, workers=workers,
        quiet=quiet, command=invocation(),
    )
    line = LineReporter()
    result = run_sweep(cfg, reporter_for=lambda name: line if quiet else RichReporter(),
                       log=line.message)
    line.message(f"results: {result.out / 'results.md'}, {result.out / 'results.csv'}")
