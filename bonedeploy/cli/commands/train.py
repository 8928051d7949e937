"""``bonedeploy train DATA --model NAME``: one seed variant, from an image folder to best.pt."""

from __future__ import annotations

from pathlib import Path

import typer

from bonedeploy.errors import ConfigError

COMMAND_KWARGS = {"no_args_is_help": True}


def parse_classes(text: str | None) -> tuple[str, ...] | None:
    if text is None:
        return None
    names = tuple(s.strip() for s in text.split(",") if s.strip())
    if len(names) < 2:
        raise ConfigError(f"--classes {text!r}: expected two or more comma-separated folder names, "
                          "e.g. Fractured,Normal")
    return names


def command(
    data: Path = typer.Argument(None, help="Image folder with one sub-folder per class "
                                "(Fractured/, Normal/). Optional with --resume.", show_default=False),
    model: str = typer.Option(None, "--model", "-m", help="Registered model (see `bonedeploy models`); "
                              "default: the seed's selected alexnet_d08_wd1e-3."),
    out: Path = typer.Option(None, "--out", "-o", help="Run folder (default: runs/MODEL)."),
    val: Path = typer.Option(None, "--val", help="A separate validation image folder instead of the "
                             "seeded stratified split of DATA."),
    epochs: int = typer.Option(None, "--epochs", help="Total epochs (default: the seed's for this model)."),
    lr: float = typer.Option(None, "--lr", help="Adam learning rate (default 1e-4)."),
    batch_size: int = typer.Option(None, "--batch-size", "-b", help="Batch size (default 32)."),
    weight_decay: float = typer.Option(None, "--weight-decay", "--wd", help="L2 weight decay λ "
                                       "(default: the seed's for this model)."),
    dropout: float = typer.Option(None, "--dropout", help="Dropout (AlexNet variants only)."),
    device: str = typer.Option("auto", "--device", help="auto | cpu | cuda."),
    precision: str = typer.Option("auto", "--precision", help="auto (bf16 autocast on CUDA and on "
                                  "CPUs with native bf16, e.g. AVX512_BF16; else fp32) | fp32 | bf16."),
    seed: int = typer.Option(0, "--seed", help="Seed for weight init, batch order, flips, dropout."),
    split_seed: int = typer.Option(0, "--split-seed", help="Seed of the stratified train/val split."),
    val_fraction: float = typer.Option(0.2, "--val-fraction", help="Share of each class held out."),
    classes: str = typer.Option(None, "--classes", help="Comma-separated class folders (default: "
                                "Fractured,Normal when both exist, else every folder)."),
    skip_bad: bool = typer.Option(False, "--skip-bad", help="Leave unreadable images out (they are "
                                  "listed in the checkpoint and report) instead of stopping."),
    resume: Path = typer.Option(None, "--resume", help="Continue the run in this folder from last.pt "
                                "(with --epochs N to extend it)."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace a finished run in --out."),
    channels_last: bool = typer.Option(None, "--channels-last/--no-channels-last",
                                       help="Memory format (default: channels_last on CUDA).",
                                       show_default=False),
    deterministic: bool = typer.Option(False, "--deterministic", help="Deterministic kernels "
                                       "(reproducible, slower on the GPU; implies fp32 with auto)."),
    precise_bn: bool = typer.Option(False, "--precise-bn", help="Re-estimate BatchNorm statistics "
                                    "on the training set before each evaluation (short schedules; "
                                    "the seed did not)."),
    eval_train: bool = typer.Option(True, "--eval-train/--no-eval-train", help="Evaluate the "
                                    "training set in eval mode after each epoch (the seed's train "
                                    "accuracy); off: keep the training pass's own figures (faster)."),
    workers: int = typer.Option(None, "--workers", help="Image-decoding processes (default: all cores)."),
    save_every: float = typer.Option(30.0, "--save-every", help="Seconds between checkpoint writes; "
                                     "the last epoch always writes."),
    target_sensitivity: float = typer.Option(None, "--target-sensitivity", help="Choose the operating "
                                             "point: the highest threshold on calibrated p(Fractured) "
                                             "whose validation sensitivity is >= S, e.g. 0.95 "
                                             "[default: argmax]."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="One plain line per epoch (for logs)."),
) -> None:
    """Train one seed variant; keep the best-validation weights in OUT/best.pt with a report.

    Writes OUT/best.pt, last.pt (resume state), metrics.json, curves.png, report.md/json, and
    calibration.md/json + reliability.png (temperature and operating point, stored in best.pt).
    """
    from bonedeploy.training import LineReporter, RichReporter, TrainConfig, train

    if data is None and resume is None:
        raise ConfigError("missing DATA: an image folder with Fractured/ and Normal/ sub-folders "
                          "(or --resume RUN_FOLDER)")
    config = TrainConfig(
        model=model, data=str(data) if data else None, val=str(val) if val else None,
        out=str(out) if out else None, epochs=epochs, lr=lr, batch_size=batch_size,
        weight_decay=weight_decay, dropout=dropout, device=device, precision=precision, seed=seed,
        split_seed=split_seed, val_fraction=val_fraction, classes=parse_classes(classes),
        skip_bad=skip_bad, quiet=quiet, resume=str(resume) if resume else None,
        channels_last=channels_last, deterministic=deterministic, precise_bn=precise_bn, eval_train=eval_train,
        workers=workers,
        save_every=save_every, overwrite=overwrite,
    )
    reporter = LineReporter() if quiet else RichReporter()
    result = train(config, reporter, target_sensitivity=target_sensitivity)
    decision = result.report.get("decision")
    if decision:
        from bonedeploy.artefacts.operating_point import OperatingPoint

        op = OperatingPoint.from_dict(decision["operating_point"])
        reporter.message(f"temperature {decision['temperature']:.3f}; operating point: {op.describe()}")
    reporter.message(summary_line(result.report, result.out))


def summary_line(report: dict, out: Path) -> str:
    from bonedeploy.eval.metrics import format_accuracy

    return (f"{report['model']}: saved epoch {report['saved_epoch']}/{report['epochs']}, "
            f"val accuracy {format_accuracy(report['val'])}, "
            f"seed reported {report['seed']['val_acc']:.2f} -> {Path(out) / 'best.pt'}")
