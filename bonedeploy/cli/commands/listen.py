"""``bonedeploy listen``: a DICOM node (C-STORE in, structured reports out to PACS)."""

from __future__ import annotations

from pathlib import Path

import typer

from bonedeploy.cli import options as opts
from bonedeploy.cli.options import lib, option

HELP = "\n\n".join([
    "Receive radiographs over DICOM (C-STORE, C-ECHO), analyse each one as `bonedeploy infer` does, "
    "write a DICOM Structured Report (TID 1500: fracture present/absent, calibrated probability, "
    "operating point, model) into the source's study, and send it to each --forward destination.",
    "Accepts DX and CR (for presentation and processing) and Secondary Capture; other SOP classes "
    "are refused by DIMSE status (0x0122). A non-radiograph or an image that cannot be decoded is "
    "acknowledged and reported as \"not analysed: <reason>\".",
    "Durable before acknowledged: an instance is written to --spool and recorded in its journal "
    "before the success status goes back; after a crash or a restart the node resumes from there. "
    "An instance sent twice gets one report. Forwarding retries with backoff until the "
    "destination takes it. `bonedeploy listen --status --spool DIR` shows the queue.",
    "Binds 127.0.0.1 unless --host says otherwise. DICOM has no authentication: restrict callers "
    "with --allow-ae, and use TLS (--tls-cert/--tls-key) or a VPN between sites (docs/pacs.md).",
])


_CFG = "bonedeploy.dicomnode.config"


def command(
    engine: Path = typer.Argument(None, help="model.onnx, model.xml, model.trt or best.pt.", show_default=False),
    spool: Path = option("--spool", help="Folder for received instances, reports, the journal and node.log.",
                         default=...),
    ae_title: str = option("--ae-title", help="This node's AE title.", default_from=lib(_CFG, "ListenConfig.ae_title")),
    port: int = option("--port", help="DICOM port (0: any free one).", default_from=lib(_CFG, "ListenConfig.port")),
    host: str = opts.host(lib(_CFG, "ListenConfig.host")),
    forward: list[str] = option("--forward", help="Send reports to AET@HOST:PORT (repeatable)."),
    allow_ae: list[str] = option("--allow-ae", help="Accept associations only from this calling AE title "
                                 "(repeatable; default: any)."),
    overlay: bool = option("--overlay", help="Also send a Secondary Capture with the Grad-CAM overlay "
                           "(needs model.explain.onnx beside the engine).", default=False),
    accept_sop_class: list[str] = option("--accept-sop-class", help="SOP Class UID to analyse instead of "
                                         "the radiograph defaults (repeatable)."),
    batch_size: int = opts.batch_size("the largest batch per model call",
                                      default_from=lib(_CFG, "ListenConfig.batch_size")),
    max_wait: float = option("--max-wait", help="Seconds an instance may wait for a batch to fill.",
                             default_from=lib(_CFG, "ListenConfig.max_wait_s")),
    retry_cap: float = option("--retry-cap", help="Longest wait, in seconds, between tries of a destination "
                              "that is down.", default_from=lib(_CFG, "ListenConfig.retry_cap_s")),
    backend: str = opts.backend("onnxruntime, openvino, tensorrt or torch", "Default: as infer."),
    device: str = opts.device(),
    threshold: float = opts.threshold(),
    tls_cert: Path = option("--tls-cert", help="PEM certificate: accept DICOM over TLS only."),
    tls_key: Path = option("--tls-key", help="PEM private key of --tls-cert."),
    status: bool = option("--status", help="Print the spool's queue per state and each destination's "
                          "last error, then exit.", default=False),
) -> None:
    import json

    from bonedeploy.dicomnode import Destination, ListenConfig, node_status, run_node
    from bonedeploy.errors import ConfigError

    if status:
        typer.echo(json.dumps(node_status(spool), indent=2))
        return
    if engine is None:
        raise ConfigError("name the ENGINE to analyse with (or pass --status)")
    if (tls_cert is None) != (tls_key is None):
        raise ConfigError("--tls-cert and --tls-key go together")
    config = ListenConfig(
        engine=engine, spool=spool, ae_title=ae_title, port=port, host=host,
        forward=tuple(Destination.parse(f) for f in forward or []), allow_ae=tuple(allow_ae or []),
        overlay=overlay, batch_size=batch_size, max_wait_s=max_wait, retry_cap_s=retry_cap,
        backend=backend, device=device, threshold=threshold,
        tls=(str(tls_cert), str(tls_key)) if tls_cert else None,
        sop_classes=tuple(accept_sop_class) if accept_sop_class else None)
    raise typer.Exit(run_node(config, ready=lambda address: typer.echo(f"listening as {address}", err=True)))


command.__doc__ = HELP
