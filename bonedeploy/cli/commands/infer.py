"""``bonedeploy infer``: batched inference over files and folders, one row per image."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from bonedeploy.cli import options as opts
from bonedeploy.cli.options import lib, option

_INFER = "bonedeploy.infer.run"
# One string per paragraph; "\b" keeps a paragraph's own lines (bonedeploy.cli.command).
HELP = "\n\n".join([
    "Classify radiographs with an exported model (.onnx, .trt/.engine/.plan) or a .pt checkpoint.",
    "Inputs are image files and folders (searched recursively, sorted). Every image gets one row in "
    "--out (CSV or JSON by its suffix): path, predicted class, p_<class> for each class, ood_score, "
    "status (ok, rejected: out of distribution (score S > threshold T) with no prediction, or "
    "error: <cause>), and label when known. The out-of-distribution gate (the artefact's card: "
    "docs/ood.md) refuses images unlike those the model was trained on; --ood off answers them all. Probabilities are calibrated (the card's "
    "temperature) and predicted is the decision at the card's operating point unless --threshold "
    "is given; <out>.run.json states the threshold used and where it came from. Rows are appended to <out>.partial as the run "
    "goes and <out> is written atomically at the end; --resume continues a killed run without "
    "doing any image twice.",
    "When the images sit in class-named folders (Fractured/, Normal/) or --labels is given, "
    "accuracy (95% CI), sensitivity, specificity, F1, ROC AUC and the confusion matrix are printed "
    "and saved to <out stem>.metrics.json.",
    "With --shard K/N (a SLURM array or Kubernetes Indexed Job task each) every part writes its own "
    "--out and <out>.run.json records the shard, the artefact and the archive's listing; "
    "bonedeploy merge checks and joins them.",
    "\bExit codes:\n"
    "0  every image answered\n"
    "4  some images were refused as out of distribution (rows rejected: ...), none failed beyond --max-error-rate\n"
    "3  some images failed (more than --max-error-rate; their rows say why)\n"
    "1  the run itself failed (missing or incompatible engine, no inputs, bad option)",
])


def command(
    inputs: list[Path] = typer.Argument(..., help="Image files and/or folders.", show_default=False),
    engine: Path = typer.Option(..., "--engine", "-e", help="model.onnx, model.xml (OpenVINO IR), "
                                "model.trt, best.pt, or a Triton server's model: grpc://HOST:PORT/NAME "
                                "or http://HOST:PORT/NAME."),
    backend: str = opts.backend("auto, torch, onnxruntime, openvino, tensorrt or triton",
                                "auto: the runtime `bench --select` recorded in <engine>.runtime.json, "
                                "else by the engine's suffix (onnxruntime for .onnx).",
                                lib("bonedeploy.backends.select", "AUTO")),
    backend_option: list[str] = typer.Option(None, "--backend-option", help="KEY=VALUE passed to "
                                             "the backend, repeatable (e.g. threads=2, hint=latency "
                                             "for openvino)."),
    provider: str = opts.provider(),
    device: str = opts.device(),
    precision: str = opts.precision(".pt only, fp32 or fp16 (CUDA)"),
    cuda_graph: bool = option("--cuda-graph", default=False, help=".pt on CUDA only: replay a CUDA graph "
                              "captured for --batch-size."),
    batch_size: int = opts.batch_size("images per model call", lib(_INFER, "InferConfig.batch_size")),
    out: Path = opts.out("preds.csv or preds.json (the suffix chooses).", lib(_INFER, "InferConfig.out")),
    workers: int = opts.workers("decode the images", "default: cores - 1; 0 decodes in the main process"),
    resume: bool = option("--resume", default=False, help="Continue: skip images already in --out or its "
                          ".partial (failed ones too: delete their rows to retry)."),
    threshold: float = opts.threshold(),
    labels: Path = option("--labels", help="CSV with columns path,label for metrics."),
    max_error_rate: float = option("--max-error-rate", help="Share of failed images tolerated before exit "
                                   "code 3.", default_from=lib(_INFER, "InferConfig.max_error_rate")),
    explain: Path = option("--explain", help="Write Grad-CAM maps (.npy) and overlays (.png) here for the "
                           "images decided Fractured, in the same pass (needs a .pt, a model.explain.onnx, "
                           "or one beside the engine)."),
    explain_all: bool = option("--explain-all", default=False, help="With --explain: every image."),
    dicom_sr: Path = typer.Option(None, "--dicom-sr", help="Also write a DICOM Structured Report "
                                  "(TID 1500: finding, probability, operating point, model) for each "
                                  "DICOM input, named <SOP Instance UID>.sr.dcm, here (the [dicom] extra)."),
    shard: str = option("--shard", help="Run part K of N of one archive folder: K/N (0 <= K < N), auto/N or "
                        "auto (K from JOB_COMPLETION_INDEX or SLURM_ARRAY_TASK_ID, N from "
                        "SLURM_ARRAY_TASK_COUNT). An image's part is a hash of its path relative to the "
                        "folder; bonedeploy merge joins the parts' files."),
    quiet: bool = opts.quiet(),
    remote_decode: bool = option("--remote-decode", default=False, help="grpc:// or http:// engines: send "
                                 "the files' bytes and let the server decode them (NAME_file)."),
    ood: str = option("--ood", help="The artefact's out-of-distribution gate: on (refuse images scored "
                      "above its threshold) or off (answer every image; the run record says so).",
                      default_from=lib(_INFER, "InferConfig.ood")),
) -> None:
    from rich.console import Console

    from bonedeploy.backends.select import check_requested
    from bonedeploy.data.shard import parse_shard
    from bonedeploy.infer.run import InferConfig, run_inference

    config = InferConfig(
        engine=engine, inputs=tuple(inputs), out=out, shard=parse_shard(shard), backend=backend and check_requested(backend),
        backend_settings=parse_backend_options(backend_option or []), provider=provider,
        device=device, precision=precision, cuda_graph=cuda_graph, batch_size=batch_size,
        workers=workers, resume=resume, threshold=threshold, labels=labels,
        max_error_rate=max_error_rate, remote_decode=remote_decode, explain=explain,
        explain_all=explain_all, dicom_sr=dicom_sr, ood=ood)
    from bonedeploy.ui.progress import progress_bar

    with progress_bar(Console(stderr=True, quiet=quiet), unit="img") as progress:
        result = run_inference(config, progress=progress)
    if quiet:
        print(summary_line(result))  # the final line
    else:
        print_summary(Console(), result)
    code = result.exit_code(config.max_error_rate)
    if code:
        raise typer.Exit(code)


command.__doc__ = HELP


def parse_backend_options(items: list[str]) -> tuple[tuple[str, str], ...]:
    from bonedeploy.errors import ConfigError

    out = []
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--backend-option {item!r}: expected KEY=VALUE, e.g. threads=2")
        out.append((key.strip(), value.strip()))
    return tuple(out)


def summary_line(r) -> str:
    gated = r.rejected or (r.ood or {}).get("applied")  # the count of refusals where there can be any
    return (f"{r.total} images: {r.ok} ok, "
            + (f"{len(r.rejected)} refused (out of distribution), " if gated else "")
            + f"{len(r.errors)} failed"
            + (f", {r.resumed} resumed from {r.out}" if r.resumed else "")
            + f"; {r.processed} run in {r.seconds:.1f} s ({r.images_per_s:.1f} images/s)"
            + f" with {r.backend.get('backend')} -> {r.out}")


def print_summary(console, result) -> None:
    from rich.markup import escape

    r = result
    console.print(summary_line(r))
    if r.decision:
        d = r.decision
        console.print(f"decision: {d['rule']} ({d['threshold_source']}; temperature {d['temperature']:.3g})",
                      highlight=False)
    if r.backend_choice and r.backend_choice.get("how") != "requested":
        console.print(f"backend {r.backend.get('backend')}: {r.backend_choice['how']}", highlight=False)
    for path, status in r.rejected[:10]:
        console.print(f"  [yellow]refused[/] {escape(str(path))}: {escape(status)}", highlight=False)
    if len(r.rejected) > 10:
        console.print(f"  ... and {len(r.rejected) - 10} more refused (see {escape(str(r.out))})")
    for path, cause in r.errors[:10]:
        console.print(f"  [red]error[/] {escape(str(path))}: {escape(str(cause))}", highlight=False)
    if len(r.errors) > 10:
        console.print(f"  ... and {len(r.errors) - 10} more (see {escape(str(r.out))})")
    if r.explained:
        console.print(f"explained {r.explained} images -> {escape(str(r.explain_dir))}", highlight=False)
    if r.reports:
        console.print(f"wrote {r.reports} DICOM structured reports", highlight=False)
    for note in r.notes:  # one line each, never re-wrapped: notes carry commands to copy
        console.print(f"note: {escape(note)}", highlight=False, soft_wrap=True)
    if r.extra_rows:
        console.print(f"note: {r.extra_rows} rows from earlier runs for other inputs kept in {r.out}")
    if r.metrics:
        console.print(metrics_table(r.metrics, console.width))
        console.print(f"metrics -> {escape(str(r.metrics_path))}", highlight=False, soft_wrap=True)


def metrics_table(m: dict[str, Any], width: int = 200) -> Any:
    from rich.markup import escape

    from bonedeploy.ui.tables import KEY, Col, fit_table
    from bonedeploy.eval.metrics import format_accuracy

    rows = [["accuracy", format_accuracy(m)]]
    for key in ("sensitivity", "specificity", "f1", "roc_auc"):
        v = m.get(key)
        rows.append([key, "–" if v is None else f"{v:.3f}"])
    classes = m["classes"]
    cm = m["confusion_matrix"]
    rows.append(["confusion (rows true, cols pred)", "\n".join(
        f"{c:>10}: " + "  ".join(f"{v:>4}" for v in row) for c, row in zip(classes, cm))])
    if m.get("n_unlabelled"):
        rows.append(["unlabelled (not scored)", str(m["n_unlabelled"])])
    return fit_table((Col("metric", KEY, "left", wrap=True), Col("value", KEY, "left")), rows, width,
                     title=f"metrics on {m['n']} labelled images ({escape(str(m.get('label_source')))})",
                     show_header=False)
