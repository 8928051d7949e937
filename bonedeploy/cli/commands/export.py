"""``bonedeploy export``: checkpoint -> ONNX fp32/fp16/int8 (+ TensorRT engine), parity-gated.

Imports only typer/rich at module level; the export itself (torch, onnx) loads inside ``command``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from bonedeploy.ui.tables import KEY, Col, fit_table
from bonedeploy.errors import ArtefactError, BackendUnavailableError, GateFailedError

COMMAND_KWARGS = {"no_args_is_help": True}


def command(
    source: Path = typer.Argument(..., help="A bonedeploy checkpoint (best.pt), or an exported .onnx "
                                            "file to build only the TensorRT engine (on the target)."),
    out: Path = typer.Option(None, "--out", "-o", help="Output folder [default: beside the source]."),
    precision: str = typer.Option(None, "--precision",
                                  help="Comma-separated ONNX precisions: fp32, fp16, int8 [default: fp32,fp16]."),
    trt: bool = typer.Option(None, "--trt/--no-trt", help="Build the TensorRT engine: required (--trt) or "
                                                          "skipped (--no-trt) [default: when TensorRT and a GPU are here]."),
    batch: str = typer.Option(None, "--batch", help="Engine batch profile MIN,OPT,MAX [default: 1,8,32]."),
    engine_from: str = typer.Option(None, "--engine-from",
                                    help="Precision of the ONNX file the engine is built from [default: fp16]."),
    workspace: int = typer.Option(None, "--workspace", help="TensorRT workspace limit in MiB [default: 2048]."),
    calib: Path = typer.Option(None, "--calib", help="int8 calibration images (a folder, >= 32 images) "
                                                     "[default: the checkpoint's train split]."),
    opset: int = typer.Option(None, "--opset", help="ONNX opset, 17..23 [default: 18]."),
    data: Path = typer.Option(None, "--data", help="Labelled image-folder tree for the parity check "
                                                   "[default: the checkpoint's validation images, else synthetic]."),
    parity_n: int = typer.Option(None, "--parity-n", help="At most this many parity images."),
    gate_fp32: float = typer.Option(None, "--gate-fp32", help="fp32 gate: max |Δprob| [default: 1e-4]."),
    gate_fp16: float = typer.Option(None, "--gate-fp16", help="fp16 gate: max |Δprob| [default: 1e-2]."),
    gate_int8: float = typer.Option(None, "--gate-int8", help="int8 gate: min top-1 agreement [default: 0.98]."),
    max_accuracy_drop: float = typer.Option(None, "--max-accuracy-drop",
                                            help="int8 gate: max accuracy drop in points [default: 1]."),
    flip_margin: float = typer.Option(None, "--flip-margin", help="fp16 gate: label flips whose reference "
                                      "p(Fractured) is within this of the boundary are tolerated [default: 0.05]."),
    profile: str = typer.Option(None, "--profile", help="Export profile: edge-cpu, jetson, server-gpu "
                                                        "(packaged; ./export/NAME.toml overrides) or a .toml path."),
    timing_cache: Path = typer.Option(None, "--timing-cache", help="TensorRT timing-cache folder "
                                                                   "[default: ~/.cache/bonedeploy/tensorrt-timing]."),
    explain: bool = typer.Option(False, "--explain", help="Also write model.explain.onnx: logits and an "
                                 "in-graph Grad-CAM output 'cam' (AlexNet family)."),
    openvino: bool = typer.Option(False, "--openvino", help="Also write OpenVINO IR (.xml + .bin) "
                                  "beside each ONNX file, gated like them (needs the [openvino] extra); "
                                  "with an .onnx input: only its IR."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="Only the result table and errors."),
    triton_repo: Path = typer.Option(None, "--triton-repo", help="Also write a Triton model repository "
                                     "here (DIR/NAME/config.pbtxt + 1/model.onnx|model.plan); from an "
                                     ".onnx/.trt source only the repository is written."),
    name: str = typer.Option("bonedeploy", "--name", help="Model name in the --triton-repo repository."),
) -> None:
    """Export a checkpoint to ONNX (fp32/fp16/int8) and TensorRT, gated on parity.

    Every file is checked against the PyTorch fp32 reference; given an exported .onnx file, only
    the TensorRT engine is built (on the target device)."""
    from bonedeploy.export.from_checkpoint import run_export

    console = Console()
    if triton_repo is not None and source.suffix.lower() != ".pt":
        return print_repo(console, _write_repo(source, triton_repo, name))
    config = build_config(locals())
    result = run_export(config, log=(lambda m: None) if quiet else
                        (lambda m: console.print(f"[dim]{escape(m)}[/]", highlight=False)))
    console.print(result_table(result, console.width))
    from bonedeploy.eval.operating_point import summarise_parity

    for f in result.files:
        if f.parity:
            console.print(escape(summarise_parity(f.path.name, f.parity)), highlight=False, soft_wrap=True)
    if explain:
        from bonedeploy.artefacts.naming import explain_filename
        from bonedeploy.export.explain_onnx import export_explain

        path = export_explain(source, result.out_dir / explain_filename())
        console.print(f"explain graph: {escape(str(path))}", highlight=False)
    if triton_repo is not None and not result.failed:
        from bonedeploy.export.triton_repo import repo_source

        print_repo(console, _write_repo(repo_source(result), triton_repo, name))
    finish(result, console)


def _write_repo(source: Path, repo: Path, name: str):
    from bonedeploy.export.triton_repo import write_triton_repo

    return write_triton_repo(source, repo, name)


def print_repo(console: Console, r) -> None:
    console.print(escape(f"Triton repository: {r.config_path} + {r.model_path.relative_to(r.repo)} "
                         f"({r.platform}, max_batch_size {r.max_batch_size})"), highlight=False)


def build_config(opts: dict[str, Any]):
    """Profile defaults, then the options given on the command line."""
    from bonedeploy.export.results import ExportConfig
    from bonedeploy.export.profiles import load_profile
    from bonedeploy.export.tensorrt import BatchProfile
    from bonedeploy.eval.parity import GATES

    prof = load_profile(opts["profile"]) if opts.get("profile") else {}
    pick = lambda key, pkey=None: opts.get(key) if opts.get(key) is not None else prof.get(pkey or key)  # noqa: E731
    kwargs: dict[str, Any] = {"source": opts["source"], "out": opts.get("out"), "calib": opts.get("calib"),
                              "data": opts.get("data"), "parity_n": opts.get("parity_n"),
                              "timing_cache_dir": opts.get("timing_cache"),
                              "openvino": bool(opts.get("openvino"))}
    if (p := pick("precision")) is not None:
        kwargs["precisions"] = tuple(s.strip().lower() for s in str(p).split(",") if s.strip())
    if (b := pick("batch")) is not None:
        kwargs["batch"] = BatchProfile.parse(b)
    for key, pkey, name in (("trt", None, "trt"), ("engine_from", None, "engine_from"),
                            ("workspace", "workspace_mb", "workspace_mb"), ("opset", None, "opset")):
        if (v := pick(key, pkey)) is not None:
            kwargs[name] = v
    gates = dict(GATES)
    for prec, key, field in (("fp32", "gate_fp32", "max_abs_dprob"), ("fp16", "gate_fp16", "max_abs_dprob"),
                             ("fp16", "flip_margin", "flip_margin"), ("int8", "gate_int8", "min_top1_agreement")):
        if opts.get(key) is not None:
            gates[prec] = gates[prec].with_(**{field: float(opts[key])})
    if opts.get("max_accuracy_drop") is not None:
        gates["int8"] = gates["int8"].with_(max_accuracy_drop=float(opts["max_accuracy_drop"]) / 100)
    return ExportConfig(gates=gates, **kwargs)


# The file name and the gate verdict are keys; the numbers go, lowest priority first, when narrow.
RESULT_COLUMNS = (Col("file", KEY, "left"), Col("prec", 6), Col("MB", 2), Col("max|Δp|", 5),
                  Col("mean|Δp|", 0), Col("agree", 4), Col("flips", 3), Col("Δacc", 1), Col("gate", KEY))


def result_table(result, width: int = 200) -> Table:
    """One row per file: parity with the PyTorch fp32 reference and the gate verdict (failing
    files in red; the reasons are printed below the table)."""
    from rich import box

    rows = []
    for f in result.files:
        p = f.parity or {}
        dacc = p.get("accuracy_delta")
        n_flips = len(p.get("flips") or [])
        rows.append([escape(f.path.name) if f.passed else f"[bold red]{escape(f.path.name)}[/]", f.precision,
                     f"{f.bytes / 1e6:.1f}", f"{p.get('max_abs_dprob', float('nan')):.0e}",
                     f"{p.get('mean_abs_dprob', float('nan')):.0e}", f"{p.get('top1_agreement', 0):.1%}",
                     f"{n_flips}" + (f"({p.get('flips_away', 0)} far)" if n_flips else ""),
                     "–" if dacc is None else f"{dacc * 100:+.1f}pt",
                     "[green]pass[/]" if f.passed else "[bold red]FAIL[/]"])
    return fit_table(RESULT_COLUMNS, rows, width, box=box.SIMPLE_HEAD, pad_edge=False, collapse_padding=True,
                     title=f"bonedeploy export: {escape(str(result.model))} -> {escape(str(result.out_dir))}",
                     caption=f"parity vs PyTorch fp32 on {result.parity_inputs.get('n')} "
                             f"{result.parity_inputs.get('kind')} images (onnxruntime CPU)")


def finish(result, console: Console) -> None:
    """Engine note, report path, then the exit status: gate failures exit 2, engine errors 1."""
    eng = result.engine or {}
    if eng.get("built"):
        console.print(escape(f"engine: {result.out_dir / eng['path']} (from {eng['from']}, TensorRT "
                             f"{eng.get('tensorrt')}, {eng.get('gpu')}); sidecar {eng['sidecar']}"),
                      highlight=False)
    elif eng.get("command") and not eng.get("error"):
        console.print(f"[yellow]no TensorRT engine built[/]: {escape(str(eng.get('reason')))}. To build it "
                      f"on the target (TensorRT + NVIDIA GPU), run there:\n  {escape(eng['command'])}",
                      highlight=False)
    for f in result.failed:
        console.print(f"[bold red]{escape(f.path.name)}[/] fails its gate ({escape(f.gate or '')}): "
                      f"{escape('; '.join(f.failures))}", highlight=False)
    if result.report:
        console.print(f"report: {escape(str(result.report))}", highlight=False)
    if result.failed:
        if eng.get("error"):  # the gate's exit status wins; still say what happened to the engine
            console.print(f"[bold red]engine:[/] {escape(eng['error'])}", highlight=False)
        names = ", ".join(f.path.name for f in result.failed)
        raise GateFailedError(f"{len(result.failed)} file(s) failed the parity gate: {names} "
                              f"(kept in {result.out_dir}; see {result.report.name if result.report else 'the table'})")
    if eng.get("error"):
        cls = BackendUnavailableError if eng.get("unavailable") else ArtefactError
        raise cls(f"{eng['error']}" + (f"; build it on the target with: {eng['command']}" if eng.get("command") else ""))
