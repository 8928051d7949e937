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

from bonedeploy.cli import options as opts
from bonedeploy.cli.options import LibraryDefault, lib, option
from bonedeploy.errors import ArtefactError, BackendUnavailableError, GateFailedError
from bonedeploy.ui.tables import KEY, Col, fit_table

COMMAND_KWARGS = {"no_args_is_help": True}


_RESULTS, _PARITY = "bonedeploy.export.results", "bonedeploy.eval.parity"


def _gate(precision: str, field: str, scale: float = 1.0) -> LibraryDefault:
    return lib(_PARITY, "GATES", pick=lambda gates: getattr(gates[precision], field) * scale)


def command(
    source: Path = typer.Argument(..., help="A bonedeploy checkpoint (best.pt), or an exported .onnx "
                                            "file to build only the TensorRT engine (on the target)."),
    out: Path = opts.out("Output folder (default: beside the source)."),
    precision: str = opts.precisions("fp32, fp16, int8", lib(_RESULTS, "ExportConfig.precisions")),
    trt: bool = option("--trt/--no-trt", help="Build the TensorRT engine: required (--trt) or skipped "
                       "(--no-trt) (default: when TensorRT and a GPU are here).", show_default=False),
    batch: str = option("--batch", help="Engine batch profile MIN,OPT,MAX.",
                        default_from=lib(_RESULTS, "ExportConfig.batch")),
    engine_from: str = option("--engine-from", help="Precision of the ONNX file the engine is built from "
                              "(default: fp16 when it is exported, else the lowest precision exported)."),
    workspace: int = option("--workspace", help="TensorRT workspace limit in MiB.",
                            default_from=lib(_RESULTS, "ExportConfig.workspace_mb")),
    calib: Path = option("--calib", help="int8 calibration images: a folder of at least 32 images "
                         "(default: the checkpoint's train split)."),
    opset: int = option("--opset", help="ONNX opset, 17..23.", default_from=lib(_RESULTS, "ExportConfig.opset")),
    data: Path = opts.data("for the parity check (default: the checkpoint's validation images, else synthetic)"),
    parity_n: int = opts.parity_n(),
    gate_fp32: float = option("--gate-fp32", help="fp32 gate: max |Δprob|.", default_from=_gate("fp32", "max_abs_dprob")),
    gate_fp16: float = option("--gate-fp16", help="fp16 gate: max |Δprob|.", default_from=_gate("fp16", "max_abs_dprob")),
    gate_int8: float = option("--gate-int8", help="int8 gate: min top-1 agreement.",
                              default_from=_gate("int8", "min_top1_agreement")),
    max_accuracy_drop: float = option("--max-accuracy-drop", help="int8 gate: max accuracy drop in points.",
                                      default_from=_gate("int8", "max_accuracy_drop", 100)),
    flip_margin: float = option("--flip-margin", help="fp16 gate: label flips whose reference p(Fractured) "
                                "is within this of the boundary are tolerated.",
                                default_from=_gate("fp16", "flip_margin")),
    profile: str = option("--profile", help="Export profile: edge-cpu, jetson, server-gpu (packaged; "
                          "./export/NAME.toml overrides) or a .toml path. Options given here win over it."),
    timing_cache: Path = option("--timing-cache", help="TensorRT timing-cache folder (default: "
                                "bonedeploy/tensorrt-timing in the user's cache folder)."),
    explain: bool = option("--explain", default=False, help="Also write model.explain.onnx: logits and an "
                           "in-graph Grad-CAM output 'cam' (AlexNet family)."),
    openvino: bool = option("--openvino", default=False, help="Also write OpenVINO IR (.xml + .bin) beside "
                            "each ONNX file, gated like them (needs the [openvino] extra); with an .onnx "
                            "input: only its IR."),
    repair: str = option("--repair", help="When int8 (or fp16) fails its gate, search for the cheapest "
                         "mixed precision that passes (float islands, calibration) and keep it: off, int8, "
                         "fp16 or int8,fp16.", default_from=lib("bonedeploy.export.repair", "RepairConfig.precisions")),
    quiet: bool = opts.quiet(),
    triton_repo: Path = option("--triton-repo", help="Also write a Triton model repository here "
                               "(DIR/NAME/config.pbtxt + 1/model.onnx|model.plan); from an .onnx/.trt "
                               "source only the repository is written."),
    name: str = opts.name(lib("bonedeploy.artefacts.triton", "DEFAULT_NAME")),
) -> None:
    """Export a checkpoint to ONNX (fp32/fp16/int8) and TensorRT, gated on parity.

    Every file is checked against the PyTorch fp32 reference; given an exported .onnx file, only
    the TensorRT engine is built (on the target device)."""
    from bonedeploy.export.from_checkpoint import run_export

    console = Console()
    say = Console(quiet=quiet)  # everything but the errors and the final line
    if triton_repo is not None and source.suffix.lower() != ".pt":
        return print_repo(console, _write_repo(source, triton_repo, name))
    config = build_config(locals())
    result = run_export(config, log=lambda m: say.print(f"[dim]{escape(m)}[/]", highlight=False))
    say.print(result_table(result, console.width))
    from bonedeploy.eval.operating_point import summarise_parity

    from bonedeploy.eval.parity import ood_summary

    for f in result.files:
        if f.parity:
            say.print(escape(summarise_parity(f.path.name, f.parity)), highlight=False, soft_wrap=True)
            if line := ood_summary(f.path.name, f.parity):
                say.print(escape(line), highlight=False, soft_wrap=True)
    for note in result.notes:
        say.print(f"note: {escape(note)}", highlight=False, soft_wrap=True)
    from bonedeploy.export.repair import repair_summary

    for f in result.files:
        for line in repair_summary(f.path.name, f.repair):
            say.print(escape(line), highlight=False, soft_wrap=True)
    if explain:
        from bonedeploy.artefacts.naming import explain_filename
        from bonedeploy.export.explain_onnx import export_explain

        path = export_explain(source, result.out_dir / explain_filename())
        say.print(f"explain graph: {escape(str(path))}", highlight=False)
    if triton_repo is not None and not result.failed:
        from bonedeploy.export.triton_repo import repo_source

        repo = _write_repo(repo_source(result), triton_repo, name)
        say.print(repo_line(repo), highlight=False)
    finish(result, say, console)


def _write_repo(source: Path, repo: Path, name: str | None):
    from bonedeploy.export.triton_repo import write_triton_repo

    return write_triton_repo(source, repo, **({"name": name} if name else {}))


def repo_line(r) -> str:
    return escape(f"Triton repository: {r.config_path} + {r.model_path.relative_to(r.repo)} "
                  f"({r.platform}, max_batch_size {r.max_batch_size})")


def print_repo(console: Console, r) -> None:
    console.print(repo_line(r), highlight=False)


def build_config(o: dict[str, Any]):
    """The command line's options over the profile (``bonedeploy.export.profiles.export_config``)."""
    from bonedeploy.export.profiles import export_config

    drop = o["max_accuracy_drop"]
    gates = {"fp32": {"max_abs_dprob": o["gate_fp32"]},
             "fp16": {"max_abs_dprob": o["gate_fp16"], "flip_margin": o["flip_margin"]},
             "int8": {"min_top1_agreement": o["gate_int8"],
                      "max_accuracy_drop": None if drop is None else drop / 100}}  # points -> fraction
    return export_config(o["source"], o["profile"], gates=gates, out=o["out"], precisions=o["precision"],
                         trt=o["trt"], batch=o["batch"], engine_from=o["engine_from"],
                         workspace_mb=o["workspace"], calib=o["calib"], opset=o["opset"], data=o["data"],
                         parity_n=o["parity_n"], timing_cache_dir=o["timing_cache"], openvino=o["openvino"],
                         repair=o["repair"])


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


def finish(result, console: Console, final: Console | None = None) -> None:
    """Engine note, report path (the final line: on ``final``, which --quiet keeps), then the exit
    status: gate failures exit 2, engine errors 1."""
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
        (final or console).print(f"report: {escape(str(result.report))}", highlight=False, soft_wrap=True)
    if result.failed:
        if eng.get("error"):  # the gate's exit status wins; still say what happened to the engine
            console.print(f"[bold red]engine:[/] {escape(eng['error'])}", highlight=False)
        names = ", ".join(f.path.name for f in result.failed)
        raise GateFailedError(f"{len(result.failed)} file(s) failed the parity gate: {names} "
                              f"(kept in {result.out_dir}; see {result.report.name if result.report else 'the table'})")
    if eng.get("error"):
        cls = BackendUnavailableError if eng.get("unavailable") else ArtefactError
        raise cls(f"{eng['error']}" + (f"; build it on the target with: {eng['command']}" if eng.get("command") else ""))
