"""``bonedeploy demo``: the main job on an embedded default (synthetic radiographs)."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console
from rich.markup import escape

from bonedeploy.ui.tables import print_markdown


def command(
    out: Path = typer.Option(Path("bonedeploy-demo"), "--out", "-o", help="Folder for everything."),
    device: str = typer.Option("auto", "--device", help="auto | cpu | cuda (training)."),
    size: str = typer.Option(None, "--size",
                             help="gpu (seed schedule) | cpu (short schedule) | tiny (smoke test); "
                                  "default from the device."),
    epochs: int = typer.Option(None, "--epochs", help="Override the schedule's epochs."),
    difficulty: str = typer.Option("easy", "--difficulty", help="Synthetic fracture subtlety: easy | medium | hard."),
    seed: int = typer.Option(0, "--seed"),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing --out folder."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="One line per step and epoch."),
) -> None:
    """The main job on synthetic radiographs: synth, train, export, infer, score, bench.

    Generates a synthetic set, trains the seed's AlexNet, exports ONNX (+TensorRT), infers on an
    unseen test folder, scores it against the answer key, benchmarks every artefact, and
    summarises."""
    from bonedeploy.demo import DemoConfig, run_demo

    console = Console()
    config = DemoConfig(out=out, device=device, size=size, epochs=epochs, difficulty=difficulty,
                        seed=seed, overwrite=overwrite, quiet=quiet)
    result = run_demo(config, log=lambda m: console.print(f"[bold cyan]{escape(m)}[/]", highlight=False),
                      console=console)
    console.rule("bonedeploy demo summary")
    print_summary(console, (result.out / "summary.md").read_text())
    console.print(f"summary: {escape(str(result.summary_path))}", highlight=False)


def print_summary(console: Console, summary_md: str) -> None:
    """summary.md on the terminal: file and artefact names and the verdicts print whole."""
    print_markdown(console, summary_md, key_headers=("gate", "status"))
