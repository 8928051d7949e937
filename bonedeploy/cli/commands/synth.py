"""``bonedeploy synth``: write a synthetic Fractured/Normal elbow-radiograph image folder."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console

from bonedeploy.errors import BackendUnavailableError


def command(
    out: Path = typer.Argument(..., help="Output folder: gets Fractured/, Normal/, synth.json."),
    n: int = typer.Option(200, "--n", help="Labelled images to write."),
    seed: int = typer.Option(0, "--seed", help="Same seed, same bytes."),
    difficulty: str = typer.Option("easy", "--difficulty",
                                   help="How subtle breaks are: easy, medium, hard."),
    test_n: int = typer.Option(0, "--test-n",
                               help="Also write unlabelled OUT/test/ + OUT/test_answers.csv."),
    image_format: str = typer.Option("png", "--format", help="png or jpeg."),
    bit_depth: int = typer.Option(8, "--bit-depth", help="8, or 16 (grayscale PNG only)."),
    rgb: bool = typer.Option(False, "--rgb", help="Write 3-channel images (gray in RGB)."),
    fractured_fraction: float = typer.Option(0.5, "--fractured-fraction",
                                             help="Share of Fractured images."),
    min_size: int = typer.Option(380, "--min-size", help="Smallest image side, px."),
    max_size: int = typer.Option(640, "--max-size", help="Largest image side, px."),
    workers: int = typer.Option(None, "--workers", help="Processes (default: all usable cores)."),
    overwrite: bool = typer.Option(False, "--overwrite",
                                   help="Replace a previous synth output in OUT."),
    contact_sheet: Path = typer.Option(None, "--contact-sheet",
                                       help="Also save a labelled grid of examples to this PNG."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar or summary."),
) -> None:
    """Generate synthetic lateral elbow radiographs (Fractured / Normal) for demos and tests."""
    try:
        from bonedeploy.data.synth import SynthConfig, generate_dataset
    except ModuleNotFoundError as e:  # the renderer's filters come with the report extra
        if e.name != "scipy":
            raise
        raise BackendUnavailableError("bonedeploy synth needs scipy: pip install 'bonedeploy[report]'") from e

    config = SynthConfig(n=n, seed=seed, difficulty=difficulty, test_n=test_n,
                         image_format=image_format, bit_depth=bit_depth, rgb=rgb,
                         fractured_fraction=fractured_fraction, min_size=min_size,
                         max_size=max_size)
    console = Console(quiet=quiet)
    summary = _generate(console, generate_dataset, out, config, workers, overwrite)
    counts = ", ".join(f"{k} {v}" for k, v in summary["counts"].items())
    test = f", test {summary['test_n']} (key: {summary['answers']})" if summary["test_n"] else ""
    console.print(f"wrote {out}: {counts}{test} in {summary['elapsed_s']:.1f} s "
                  f"({summary['images_per_s']:.1f} images/s, {summary['workers']} workers)")
    if contact_sheet is not None:
        from bonedeploy.data.synth.contact_sheet import save_contact_sheet

        save_contact_sheet(contact_sheet, seed=seed)
        console.print(f"contact sheet: {contact_sheet}")


def _generate(console: Console, generate, out, config, workers, overwrite) -> dict:
    from bonedeploy.ui.progress import progress_bar

    with progress_bar(console, unit="img", transient=True) as bar:
        return generate(out, config, progress=bar, workers=workers, overwrite=overwrite)
