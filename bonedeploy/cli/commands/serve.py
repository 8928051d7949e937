"""``bonedeploy serve``: an artefact behind NVIDIA Triton (HTTP/gRPC, dynamic batching, metrics)."""

from __future__ import annotations

from pathlib import Path

import typer

from bonedeploy.cli import options as opts
from bonedeploy.cli.options import lib, option

COMMAND_KWARGS = {"no_args_is_help": True}


_SERVE = "bonedeploy.serve.server"


def command(
    engine: Path = typer.Argument(..., help="model.onnx, model.trt/.engine/.plan or best.pt.", show_default=False),
    name: str = opts.name(lib(_SERVE, "ServeConfig.name")),
    host: str = opts.host(lib(_SERVE, "ServeConfig.host"), "Triton has no authentication: see "
                          "docs/serving.md."),
    http_port: int = option("--http-port", help="HTTP/REST (KServe v2) port.",
                            default_from=lib(_SERVE, "ServeConfig.http_port")),
    grpc_port: int = option("--grpc-port", help="gRPC port.", default_from=lib(_SERVE, "ServeConfig.grpc_port")),
    metrics_port: int = option("--metrics-port", help="Prometheus metrics port.",
                               default_from=lib(_SERVE, "ServeConfig.metrics_port")),
    max_batch: int = option("--max-batch", help="Dynamic batching's largest batch (default: the engine "
                            "profile's max, else the export batch profile's); capped by the profile."),
    max_queue_delay_us: int = option("--max-queue-delay-us", help="How long a request may wait for others "
                                     "to batch with, in microseconds.",
                                     default_from=lib(_SERVE, "ServeConfig.max_queue_delay_us")),
    instances: int = option("--instances", help="Model instances (processes) per model.",
                            default_from=lib(_SERVE, "ServeConfig.instances")),
    max_request_mb: float = option("--max-request-mb", help="Largest file or tensor request accepted; "
                                   "larger ones get an error status.",
                                   default_from=lib(_SERVE, "ServeConfig.max_request_mb")),
    backend: str = opts.backend("torch, onnxruntime, openvino or tensorrt",
                                "Default: as `infer --backend auto` chooses (the record `bench --select` "
                                "wrote beside the engine, else by its suffix)."),
    device: str = opts.device(),
    provider: str = opts.provider(),
    verbose: bool = option("--verbose", "-v", default=False, help="Show Triton's own log."),
) -> None:
    """Serve a model on NVIDIA Triton (the tritonserver bundled with nvidia-pytriton).

    Two models: NAME (preprocessed FP32 tensors -> logits, probs) and NAME_file (PNG/JPEG/BMP/TIFF/
    DICOM bytes, decoded on the server like infer -> probs, label, status per item). Prints its
    URLs when ready; SIGINT/SIGTERM stop it within 10 s. Needs the [serve] extra."""
    from bonedeploy.serve.server import ServeConfig, run_server

    config = ServeConfig(engine=engine, name=name, host=host, http_port=http_port, grpc_port=grpc_port,
                         metrics_port=metrics_port, max_batch=max_batch, max_queue_delay_us=max_queue_delay_us,
                         instances=instances, max_request_mb=max_request_mb, backend=backend, device=device,
                         provider=provider, verbose=verbose)
    raise typer.Exit(run_server(config))
