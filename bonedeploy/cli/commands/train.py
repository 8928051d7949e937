"""``bonedeploy train DATA --model NAME``: one seed variant, from an image folder to best.pt."""

from __future__ import annotations

from pathlib import Path

import typer

from bonedeploy.cli import options as opts
from bonedeploy.cli.options import lib, option
from bonedeploy.errors import ConfigError

COMMAND_KWARGS = {"no_args_is_help": True}
_TRAIN = "bonedeploy.training.config"


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
    model: str = option("--model", "-m", help="Registered model (see `bonedeploy models`).",
                        default_from=lib("bonedeploy.models.alexnet", "SELECTED")),
    out: Path = opts.out("Run folder (default: runs/MODEL)."),
    val: Path = opts.val(),
    epochs: int = opts.epochs("total (default: the seed's for this model)"),
    lr: float = option("--lr", help="Adam learning rate (default: the seed's for this model)."),
    batch_size: int = opts.batch_size("images per training step (default: the seed's for this model)"),
    weight_decay: float = option("--weight-decay", "--wd", help="L2 weight decay λ (default: the seed's "
                                 "for this model)."),
    dropout: float = option("--dropout", help="Dropout (AlexNet variants only; default: the model's)."),
    device: str = opts.device(lib(_TRAIN, "TrainConfig.device")),
    precision: str = opts.precision("auto (bf16 autocast on CUDA and on CPUs with native bf16, e.g. "
                                    "AVX512_BF16; else fp32), fp32 or bf16", lib(_TRAIN, "TrainConfig.precision")),
    seed: int = opts.seed("weight init, batch order, flips, dropout", lib(_TRAIN, "TrainConfig.seed")),
    split_seed: int = option("--split-seed", help="Seed of the stratified train/val split.",
                             default_from=lib(_TRAIN, "TrainConfig.split_seed")),
    val_fraction: float = option("--val-fraction", help="Share of each class held out.",
                                 default_from=lib(_TRAIN, "TrainConfig.val_fraction")),
    classes: str = option("--classes", help="Class folders, comma-separated (default: Fractured,Normal "
                          "when both exist, else every folder).", comma_list=True),
    skip_bad: bool = opts.skip_bad(),
    resume: Path = option("--resume", help="Continue the run in this folder from last.pt (with --epochs N "
                          "to extend it)."),
    overwrite: bool = opts.overwrite("a finished run in --out"),
    channels_last: bool = option("--channels-last/--no-channels-last", show_default=False,
                                 help="Memory format (default: channels_last on CUDA)."),
    deterministic: bool = option("--deterministic", default=False, help="Deterministic kernels "
                                 "(reproducible, slower on the GPU; implies fp32 with auto)."),
    precise_bn: bool = option("--precise-bn", default=False, help="Re-estimate BatchNorm statistics on "
                              "the training set before each evaluation (short schedules; the seed did not)."),
    eval_train: bool = option("--eval-train/--no-eval-train", help="Evaluate the training set in eval "
                              "mode after each epoch (the seed's train accuracy); off: keep the training "
                              "pass's own figures (faster).", default_from=lib(_TRAIN, "TrainConfig.eval_train")),
    workers: int = opts.workers("decode the images", "default: all cores"),
    save_every: float = option("--save-every", help="Seconds between checkpoint writes; the last epoch "
                               "always writes (under torchrun: every epoch).", default_from=lib(_TRAIN, "TrainConfig.save_every")),
    target_sensitivity: float = opts.target_sensitivity(),
    force: bool = opts.force("the validation split"),
    ood_fpr: float = opts.ood_fpr(),
    quiet: bool = opts.quiet(),
) -> None:
    """Train one seed variant; keep the best-validation weights in OUT/best.pt with a report.

    Writes OUT/best.pt, last.pt (resume state), metrics.json, curves.png, report.md/json, and
    calibration.md/json + reliability.png (temperature and operating point, stored in best.pt),
    and fits the out-of-distribution gate (features of the training split, threshold on the
    validation split; stored in best.pt, compared scores in report.md).

    Started by torchrun (torchrun --nproc-per-node N -m bonedeploy train DATA ...), each process is
    one DistributedDataParallel worker: NCCL on GPUs, gloo on CPUs, --batch-size stays the global
    batch, rank 0 writes the run folder, and a job relaunched by --max-restarts resumes from last.pt.
    """
    from bonedeploy.training import QuietReporter, RichReporter, TrainConfig, train

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
        save_every=save_every, overwrite=overwrite, ood_fpr=ood_fpr,
    )
    reporter = QuietReporter() if quiet else RichReporter()
    result = train(config, reporter, target_sensitivity=target_sensitivity, force_calibration=force)
    if not result.report:
        return  # a torchrun worker other than rank 0: rank 0 reports for the job
    line = summary_line(result.report, result.out)
    if quiet:
        print(line)  # the final line
    else:
        reporter.message(line)


def summary_line(report: dict, out: Path) -> str:
    from bonedeploy.eval.metrics import format_accuracy

    return (f"{report['model']}: saved epoch {report['saved_epoch']}/{report['epochs']}, "
            f"val accuracy {format_accuracy(report['val'])}, "
            f"seed reported {report['seed']['val_acc']:.2f} -> {Path(out) / 'best.pt'}")
