"""``bonedeploy bench``: latency, throughput and parity of every artefact against PyTorch."""

from __future__ import annotations

from pathlib import Path

import typer

from bonedeploy.bench.results import BenchConfig
from bonedeploy.cli.options import default_of
from bonedeploy.errors import ConfigError

COMMAND_KWARGS = {"no_args_is_help": False}


def parse_batch_sizes(text: str) -> tuple[int, ...]:
    try:
        sizes = tuple(int(s) for s in text.replace(" ", "").split(",") if s)
    except ValueError:
        sizes = ()
    if not sizes or any(s < 1 for s in sizes):
        raise ConfigError(f"--batch-sizes {text!r}: expected comma-separated positive integers, e.g. 1,8,32")
    return sizes


def command(
    artefacts: list[Path] = typer.Argument(
        None, help="Files to benchmark (.pt, .onnx, .trt). Default: everything in --dir.",
        show_default=False),
    run_dir: Path = typer.Option(None, "--dir", help="Run/export directory holding best.pt and "
                                 "model*.onnx / model.trt (default: the current directory)."),
    data: Path = typer.Option(None, "--data", help="Labelled image folder (Fractured/, Normal/) "
                              "for parity; default: the checkpoint's validation split, else synthetic."),
    batch_sizes: str = typer.Option(",".join(map(str, default_of(BenchConfig, "batch_sizes"))), "--batch-sizes",
                                    help="Comma-separated batch sizes.", show_default=True),
    duration: float = typer.Option(default_of(BenchConfig, "duration_s"), "--duration", show_default=True,
                                   help="Seconds measured per batch size (at least --min-iters iterations)."),
    warmup: float = typer.Option(default_of(BenchConfig, "warmup_s"), "--warmup", show_default=True,
                                 help="Seconds of warm-up per batch size."),
    min_iters: int = typer.Option(default_of(BenchConfig, "min_iterations"), "--min-iters", show_default=True,
                                  help="Minimum timed iterations."),
    mode: str = typer.Option(default_of(BenchConfig, "mode"), "--mode", show_default=True,
                             help="compute (preprocessed batch in memory), e2e (files → decode → infer) or both."),
    compile: bool = typer.Option(False, "--compile", help="Add the torch.compile max-autotune "
                                 "baseline (autotuning takes minutes)."),
    parity: bool = typer.Option(True, "--parity/--no-parity", help="Compare every artefact with "
                                "the PyTorch fp32 reference and apply the export gates."),
    parity_n: int = typer.Option(None, "--parity-n", help="Number of parity images (default: "
                                 "the whole validation split / bonedeploy.eval.parity's default)."),
    json_path: Path = typer.Option(None, "--json", help="Write every number and the machine to JSON."),
    md_path: Path = typer.Option(None, "--md", help="Write a Markdown report."),
    plot_path: Path = typer.Option(None, "--plot", help="Write a PNG plot."),
    isolate: bool = typer.Option(True, "--isolate/--in-process", help="Time each row in its own "
                                 "process, the other runtimes idle (default), or all in this one."),
    select: bool = typer.Option(False, "--select", help="Write <artefact>.runtime.json beside each "
                                "file measured under several runtimes: the fastest that passed "
                                "parity, used by `infer --backend auto`."),
    backend: str = typer.Option(None, "--backend", help="Only the rows of these backends, comma-"
                                "separated (torch, onnxruntime, openvino, tensorrt, torch-compile), "
                                "plus the PyTorch reference; default: every runtime installed."),
    cold_start_runs: int = typer.Option(default_of(BenchConfig, "cold_start_runs"), "--cold-start-runs",
                                        show_default=True, help="Per row, time this many starts of "
                                        "`bonedeploy infer` on one image, process start to the first "
                                        "row, after one untimed start (0: skip)."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress or table on the terminal."),
    engine: str = typer.Option(None, "--engine", help="A Triton-served model, grpc://HOST:PORT/NAME or "
                               "http://HOST:PORT/NAME: client-side load at each --concurrency (images per "
                               "request: the first --batch-sizes value); ARTEFACTS, if given, are the "
                               "local reference for parity."),
    concurrency: str = typer.Option("1,4,8,16", "--concurrency", help="With --engine: concurrent "
                                    "closed-loop clients, comma-separated."),
) -> None:
    """Benchmark latency, throughput and accuracy parity of every artefact vs PyTorch.

    Covers the PyTorch modes, ONNX fp32/fp16/int8 (onnxruntime, and OpenVINO when installed),
    OpenVINO IR and TensorRT.

    Artefacts that cannot run here are listed with the reason.
    Exit codes: 0 ok; 1 the run failed; 2 an artefact failed its parity gate (reports are written first).
    """
    if engine:
        return _remote(engine, concurrency, artefacts, data, batch_sizes, duration, warmup, parity_n,
                       json_path, quiet)
    from bonedeploy.bench import bench
    from bonedeploy.cli.options import invocation

    config = BenchConfig(
        artefacts=list(artefacts or []), run_dir=run_dir, data=data,
        batch_sizes=parse_batch_sizes(batch_sizes), duration_s=duration, warmup_s=warmup,
        min_iterations=min_iters, mode=mode, compile=compile, parity=parity, parity_n=parity_n,
        json_path=json_path, md_path=md_path, plot_path=plot_path, quiet=quiet, command=invocation(),
        isolate=isolate, select=select, cold_start_runs=cold_start_runs,
        backends=tuple(b for b in (backend or "").replace(" ", "").split(",") if b),
    )
    bench(config)


def _remote(engine, concurrency, artefacts, data, batch_sizes, duration, warmup, parity_n, json_path, quiet):
    from rich.console import Console

    from bonedeploy.serve.loadgen import parse_concurrency
    from bonedeploy.serve.remote_bench import RemoteBenchConfig, render, run_remote_bench

    console = Console(stderr=True, quiet=quiet)
    config = RemoteBenchConfig(
        engine=engine, concurrency=parse_concurrency(concurrency), batch_size=parse_batch_sizes(batch_sizes)[0],
        duration_s=duration, warmup_s=max(warmup, 0.5), reference=tuple(artefacts or ()), data=data,
        parity_n=parity_n, json_path=json_path)
    report = run_remote_bench(config, log=lambda m: console.print(m, highlight=False))
    if not quiet:
        print(render(report))
