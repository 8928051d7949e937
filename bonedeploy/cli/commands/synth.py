"""``bonedeploy synth``: write a synthetic Fractured/Normal elbow-radiograph image folder."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console

from bonedeploy.cli import options as opts
from bonedeploy.cli.options import lib, option
from bonedeploy.errors import BackendUnavailableError

_SYNTH = "bonedeploy.data.synth.config"


def command(
    out: Path = typer.Argument(..., help="Output folder: gets Fractured/, Normal/, synth.json."),
    n: int = option("--n", help="Labelled images to write.", default_from=lib(_SYNTH, "SynthConfig.n")),
    seed: int = opts.seed("same seed, same bytes", lib(_SYNTH, "SynthConfig.seed")),
    difficulty: str = opts.difficulty(lib(_SYNTH, "SynthConfig.difficulty")),
    test_n: int = option("--test-n", help="Also write unlabelled OUT/test/ + OUT/test_answers.csv.",
                         default_from=lib(_SYNTH, "SynthConfig.test_n")),
    image_format: str = option("--format", help="png, jpeg or dicom (DX instances, 3 per study, made-up "
                               "patients, deterministic UIDs).",
                               default_from=lib(_SYNTH, "SynthConfig.image_format")),
    bit_depth: int = option("--bit-depth", help="8, or 16 (grayscale PNG only).",
                            default_from=lib(_SYNTH, "SynthConfig.bit_depth")),
    rgb: bool = option("--rgb", default=False, help="Write 3-channel images (gray in RGB)."),
    fractured_fraction: float = option("--fractured-fraction", help="Share of Fractured images.",
                                       default_from=lib(_SYNTH, "SynthConfig.fractured_fraction")),
    min_size: int = option("--min-size", help="Smallest image side, px.",
                           default_from=lib(_SYNTH, "SynthConfig.min_size")),
    max_size: int = option("--max-size", help="Largest image side, px.",
                           default_from=lib(_SYNTH, "SynthConfig.max_size")),
    workers: int = opts.workers("render the images", "default: all usable cores"),
    overwrite: bool = opts.overwrite("a previous synth output in OUT"),
    contact_sheet: Path = option("--contact-sheet", help="Also save a labelled grid of examples to this PNG."),
    quiet: bool = opts.quiet(),
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
    summary = _generate(Console(quiet=quiet), generate_dataset, out, config, workers, overwrite)
    counts = ", ".join(f"{k} {v}" for k, v in summary["counts"].items())
    test = f", test {summary['test_n']} (key: {summary['answers']})" if summary["test_n"] else ""
    line = (f"wrote {out}: {counts}{test} in {summary['elapsed_s']:.1f} s "
            f"({summary['images_per_s']:.1f} images/s, {summary['workers']} workers)")
    if contact_sheet is not None:
        from bonedeploy.data.synth.contact_sheet import save_contact_sheet

        save_contact_sheet(contact_sheet, seed=config.seed)
        line += f"; contact sheet {contact_sheet}"
    Console().print(line, soft_wrap=True)  # the final line, --quiet or not: never re-wrapped


def _generate(console: Console, generate, out, config, workers, overwrite) -> dict:
    from bonedeploy.ui.progress import progress_bar

    with progress_bar(console, unit="img", transient=True) as bar:
        return generate(out, config, progress=bar, workers=workers, overwrite=overwrite)
