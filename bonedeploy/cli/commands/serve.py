"""``bonedeploy serve``: an artefact behind NVIDIA Triton (HTTP/gRPC, dynamic batching, metrics)."""

from __future__ import annotations

from pathlib import Path

import typer

COMMAND_KWARGS = {"no_args_is_help": True}


def command(
    engine: Path = typer.Argument(..., help="model.onnx, model.trt/.engine/.plan or best.pt.", show_default=False),
    name: str = typer.Option("bonedeploy", "--name", help="Model name: NAME takes tensors, NAME_file file bytes."),
    host: str = typer.Option("127.0.0.1", "--host", help="Address to bind (0.0.0.0: every interface; "
                             "Triton has no authentication, see the README's Serve section)."),
    http_port: int = typer.Option(8000, "--http-port", help="HTTP/REST (KServe v2) port."),
    grpc_port: int = typer.Option(8001, "--grpc-port", help="gRPC port."),
    metrics_port: int = typer.Option(8002, "--metrics-port", help="Prometheus metrics port."),
    max_batch: int = typer.Option(None, "--max-batch", help="Dynamic batching's largest batch "
                                  "[default: the engine profile's max, else 32]; capped by the profile."),
    max_queue_delay_us: int = typer.Option(1000, "--max-queue-delay-us", help="How long a request may "
                                           "wait for others to batch with."),
    instances: int = typer.Option(1, "--instances", help="Model instances (processes) per model."),
    max_request_mb: float = typer.Option(64.0, "--max-request-mb", help="Largest file or tensor request "
                                         "accepted; larger ones get an error status."),
    backend: str = typer.Option(None, "--backend", help="torch, onnxruntime, openvino or tensorrt (default: by suffix)."),
    device: str = typer.Option(None, "--device", help="auto, cpu or cuda."),
    provider: str = typer.Option(None, "--provider", help="onnxruntime execution provider (cpu, cuda, tensorrt)."),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Show Triton's own log."),
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
