"""``bonedeploy demo``: the main job on an embedded default (synthetic radiographs)."""

from __future__ import annotations

from pathlib import Path

from rich.console import Console
from rich.markup import escape

from bonedeploy.cli import options as opts
from bonedeploy.cli.options import lib, option
from bonedeploy.ui.tables import print_markdown


_DEMO = "bonedeploy.demo"


def command(
    out: Path = opts.out("Folder for everything.", lib(_DEMO, "DemoConfig.out")),
    device: str = opts.device(lib(_DEMO, "DemoConfig.device")),
    size: str = option("--size", help="gpu (the seed's schedule), cpu (a short one) or tiny (a smoke test) "
                       "(default: gpu with a CUDA GPU, else cpu)."),
    epochs: int = opts.epochs("override the schedule's"),
    difficulty: str = opts.difficulty(lib(_DEMO, "DemoConfig.difficulty")),
    seed: int = opts.seed("images, weights and batch order", lib(_DEMO, "DemoConfig.seed")),
    overwrite: bool = opts.overwrite("an existing --out folder"),
    quiet: bool = opts.quiet(),
) -> None:
    """The main job on synthetic radiographs: synth, train, export, infer, score, bench.

    Generates a synthetic set, trains the seed's AlexNet, exports ONNX (+TensorRT), infers on an
    unseen test folder, scores it against the answer key, benchmarks every artefact, and
    summarises."""
    from bonedeploy.demo import DemoConfig, run_demo

    console = Console()
    say = Console(quiet=quiet)  # everything but the errors and the final line
    config = DemoConfig(out=out, device=device, size=size, epochs=epochs, difficulty=difficulty,
                        seed=seed, overwrite=overwrite, quiet=quiet)
    reporter = None
    if quiet:
        from bonedeploy.training import QuietReporter

        reporter = QuietReporter()  # no epoch lines; warnings still shown
    result = run_demo(config, log=lambda m: say.print(f"[bold cyan]{escape(m)}[/]", highlight=False),
                      reporter=reporter, console=say)
    say.rule("bonedeploy demo summary")
    print_summary(say, (result.out / "summary.md").read_text())
    console.print(f"summary: {escape(str(result.summary_path))}", highlight=False, soft_wrap=True)


def print_summary(console: Console, summary_md: str) -> None:
    """summary.md on the terminal: file and artefact names and the verdicts print whole."""
    print_markdown(console, summary_md, key_headers=("gate", "status"))
