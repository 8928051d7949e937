"""``bonedeploy compare REFERENCE CANDIDATE``: where two artefacts of one model part ways, layer
by layer (``bonedeploy.export.compare``). Imports only typer/rich at module level."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from bonedeploy.cli import options as opts
from bonedeploy.cli.options import lib, option
from bonedeploy.ui.tables import KEY, Col, fit_table

COMMAND_KWARGS = {"no_args_is_help": True}
_LIB = "bonedeploy.export.compare"


def command(
    reference: Path = typer.Argument(..., help="The artefact to trust: best.pt, model.onnx, an OpenVINO .xml, ..."),
    candidate: Path = typer.Argument(..., help="The artefact to check against it, e.g. model.int8.onnx."),
    data: Path = opts.data("the images both run on (default: a .pt's validation split, else synthetic "
                           "radiographs)"),
    out: Path = opts.out("Folder for compare.json and layers.png (default: compare-NAME beside the candidate)."),
    parity_n: int = opts.parity_n(),
    tolerance: float = option("--tolerance", help="Accumulated SQNR in dB below which a layer has diverged.",
                              default_from=lib(_LIB, "CompareConfig.tolerance_db")),
    batch_size: int = opts.batch_size("the runs with every layer exposed", lib(_LIB, "CompareConfig.batch")),
    device: str = opts.device(lib(_LIB, "CompareConfig.device")),
    quiet: bool = opts.quiet(),
) -> None:
    """Compare two artefacts of one model layer by layer, and trace each flipped decision.

    Both run on the same images: as deployed (the decisions at the reference's operating point),
    and with every paired layer's tensor exposed (SQNR, max/mean error and cosine per layer; the
    local error each layer's own rounding adds; the first layer below --tolerance). Layers are
    paired through the module map the export recorded; a layer that cannot be paired is listed
    with the reason. Writes compare.json and layers.png (error against depth)."""
    from rich.console import Console
    from rich.markup import escape

    from bonedeploy.export.compare import CompareConfig, run_compare

    console = Console()
    say = Console(quiet=quiet)
    given = {"data": data, "out": out, "parity_n": parity_n, "tolerance_db": tolerance, "batch": batch_size,
             "device": device}
    config = CompareConfig(reference, candidate, **{k: v for k, v in given.items() if v is not None})
    report = run_compare(config, log=lambda m: say.print(f"[dim]{escape(m)}[/]", highlight=False))
    say.print(layer_table(report, console.width))
    for line in summary_lines(report):
        say.print(escape(line), highlight=False)
    if report["flips"]:
        say.print(flip_table(report, console.width))
    console.print(escape(f"report: {report['report']}" + (f"; plot: {report['plot']}" if report["plot"] else "")),
                  highlight=False)


def _db(v: Any) -> str:
    if v is None:
        return "exact"
    if isinstance(v, str):
        return v
    return f"{v:.1f}"


LAYER_COLUMNS = (Col("#", 3), Col("layer", KEY, "left"), Col("kind", 7, "left"), Col("SQNR dB", 9),
                 Col("local dB", 8), Col("chan dB", 6), Col("max|e|", 4), Col("mean|e|", 2), Col("cos", 5))


def layer_table(report: dict[str, Any], width: int = 200):
    from rich import box
    from rich.markup import escape

    first = (report.get("first_crossing") or {}).get("index")
    rows = []
    for i, r in enumerate(report["layers"]):
        name = escape(r["layer"])
        rows.append([str(i), f"[bold red]{name}[/]" if i == first else name, escape(r["kind"]), _db(r["sqnr_db"]),
                     _db(r["local_sqnr_db"]) if r.get("local_source") else "–",
                     _db(r.get("local_channel_sqnr_db")) if r.get("local_source") else "–",
                     f"{r['max_abs_err']:.1e}", f"{r['mean_abs_err']:.1e}", f"{r['cosine']:.4f}"])
    ref, cand = Path(report["reference"]["path"]).name, Path(report["candidate"]["path"]).name
    return fit_table(LAYER_COLUMNS, rows, width, box=box.SIMPLE_HEAD, pad_edge=False, collapse_padding=True,
                     title=escape(f"{cand} against {ref}, layer by layer"),
                     caption=escape(f"{report['images']['n']} {report['images']['kind']} images; layers from "
                                    f"the {report['layers_from']}"))


def summary_lines(report: dict[str, Any]) -> list[str]:
    first, tol = report.get("first_crossing"), report["tolerance_db"]
    lines = [f"first layer below {tol:g} dB: {first['layer']} ({_db(first['sqnr_db'])} dB)" if first
             else f"no layer below {tol:g} dB"]
    lines += [f"not compared: {u['layer']} ({u['kind']}): {u['reason']}" for u in report["unpaired"]]
    d = report["decisions"]
    agree = "–" if d["agreement"] is None else f"{d['agreement']:.1%}"
    lines.append(f"decisions at {d['rule']}: agreement {agree} on {d['n']} images, {d['flips']} flip(s)"
                 + (f", {d['missed_positives']} detected positive(s) missed" if d.get("missed_positives") else ""))
    return lines


MAX_FLIP_ROWS = 20  # the rest are in compare.json
FLIP_COLUMNS = (Col("image", KEY, "left"), Col("ref p", 5), Col("cand p", 5), Col("ref−t", 3),
                Col("diverges at", KEY, "left"), Col("there dB", 2))


def flip_table(report: dict[str, Any], width: int = 200):
    from rich import box
    from rich.markup import escape

    rows = []
    for f in report["flips"][:MAX_FLIP_ROWS]:
        at = f.get("diverges_at") or {}
        dist = f.get("ref_distance")
        rows.append([escape(Path(f["path"]).name), f"{f['ref_prob']:.3f}", f"{f['cand_prob']:.3f}",
                     "–" if dist is None else f"{dist:+.3f}", escape(at.get("layer") or "–"),
                     _db(at.get("sqnr_db")) if at else "–"])
    return fit_table(FLIP_COLUMNS, rows, width, box=box.SIMPLE_HEAD, pad_edge=False, collapse_padding=True,
                     title="decisions that flip, and where each image's error grew most",
                     caption="p: calibrated p(positive); ref−t: the reference's distance to the threshold"
                     + (f"; {len(report['flips']) - MAX_FLIP_ROWS} more in compare.json"
                        if len(report["flips"]) > MAX_FLIP_ROWS else ""))
