"""``bonedeploy bench``: latency, throughput and parity of every artefact against PyTorch."""

from __future__ import annotations

from pathlib import Path

import typer

from bonedeploy.cli import options as opts
from bonedeploy.cli.options import lib, option
from bonedeploy.errors import ConfigError

COMMAND_KWARGS = {"no_args_is_help": False}
_BENCH = "bonedeploy.bench.results"


def parse_batch_sizes(text: str | None) -> tuple[int, ...] | None:
    if text is None:
        return None  # BenchConfig's default
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
    run_dir: Path = option("--dir", help="Run/export directory holding best.pt and model*.onnx / "
                           "model.trt (default: the current directory)."),
    data: Path = opts.data("for parity (default: the checkpoint's validation split, else synthetic)"),
    batch_sizes: str = option("--batch-sizes", help="Batch sizes, comma-separated.", comma_list=True,
                              default_from=lib(_BENCH, "BenchConfig.batch_sizes")),
    duration: float = option("--duration", help="Seconds measured per batch size (at least --min-iters "
                             "iterations).", default_from=lib(_BENCH, "BenchConfig.duration_s")),
    warmup: float = option("--warmup", help="Seconds of warm-up per batch size.",
                           default_from=lib(_BENCH, "BenchConfig.warmup_s")),
    min_iters: int = option("--min-iters", help="Minimum timed iterations.",
                            default_from=lib(_BENCH, "BenchConfig.min_iterations")),
    mode: str = option("--mode", help="compute (preprocessed batch in memory), e2e (files → decode → "
                       "infer) or both.", default_from=lib(_BENCH, "BenchConfig.mode")),
    compile: bool = option("--compile", default=False, help="Add the torch.compile max-autotune baseline "
                           "(autotuning takes minutes)."),
    parity: bool = option("--parity/--no-parity", help="Compare every artefact with the PyTorch fp32 "
                          "reference and apply the export gates.", default_from=lib(_BENCH, "BenchConfig.parity")),
    parity_n: int = opts.parity_n(),
    json_path: Path = option("--json", help="Write every number and the machine to JSON."),
    md_path: Path = option("--md", help="Write a Markdown report."),
    plot_path: Path = option("--plot", help="Write a PNG plot."),
    isolate: bool = option("--isolate/--in-process", help="Time each row in its own process, the other "
                           "runtimes idle, or all in this one.", default_from=lib(_BENCH, "BenchConfig.isolate")),
    select: bool = option("--select", default=False, help="Write <artefact>.runtime.json beside each file "
                          "measured under several runtimes: the fastest that passed parity, used by "
                          "`infer --backend auto`."),
    backend: str = opts.backends("torch, onnxruntime, openvino, tensorrt, torch-compile",
                                 "Only their rows, plus the PyTorch reference; default: every runtime "
                                 "installed."),
    cold_start_runs: int = option("--cold-start-runs", help="Per row, time this many starts of `bonedeploy "
                                  "infer` on one image, process start to the first row, after one untimed "
                                  "start (0: skip).", default_from=lib(_BENCH, "BenchConfig.cold_start_runs")),
    quiet: bool = opts.quiet(),
    engine: str = option("--engine", help="A Triton-served model, grpc://HOST:PORT/NAME or "
                         "http://HOST:PORT/NAME: client-side load at each --concurrency (images per "
                         "request: the first --batch-sizes value); ARTEFACTS, if given, are the local "
                         "reference for parity."),
    concurrency: str = option("--concurrency", help="With --engine: concurrent closed-loop clients, "
                              "comma-separated.", comma_list=True,
                              default_from=lib("bonedeploy.serve.remote_bench", "RemoteBenchConfig.concurrency")),
) -> None:
    """Benchmark latency, throughput and accuracy parity of every artefact vs PyTorch.

    Covers the PyTorch modes, ONNX fp32/fp16/int8 (onnxruntime, and OpenVINO when installed),
    OpenVINO IR and TensorRT. Artefacts that cannot run here are listed with the reason.

    Exit codes: 0 ok; 1 the run failed; 2 an artefact failed its parity gate (reports are written
    first).
    """
    if engine:
        return _remote(engine, concurrency, artefacts, data, batch_sizes, duration, warmup, parity_n,
                       json_path, quiet)
    from bonedeploy.bench import BenchConfig, bench
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
    written = [p for p in (json_path, md_path, plot_path) if p is not None]
    if quiet and written:  # the final line; the rest of bench's output is off
        print("wrote " + ", ".join(map(str, written)))


def _remote(engine, concurrency, artefacts, data, batch_sizes, duration, warmup, parity_n, json_path, quiet):
    from rich.console import Console

    from bonedeploy.serve.loadgen import parse_concurrency
    from bonedeploy.serve.remote_bench import RemoteBenchConfig, render, run_remote_bench
    from bonedeploy.util.defaults import default_of

    console = Console(stderr=True, quiet=quiet)
    sizes = parse_batch_sizes(batch_sizes)
    floor = default_of(RemoteBenchConfig, "warmup_s")  # a remote server needs at least this warm-up
    config = RemoteBenchConfig(
        engine=engine, concurrency=parse_concurrency(concurrency) if concurrency else None,
        batch_size=sizes[0] if sizes else None, duration_s=duration,
        warmup_s=None if warmup is None else max(warmup, floor), reference=tuple(artefacts or ()),
        data=data, parity_n=parity_n, json_path=json_path)
    report = run_remote_bench(config, log=lambda m: console.print(m, highlight=False))
    if not quiet:
        print(render(report))
    elif json_path is not None:
        print(f"wrote {json_path}")
