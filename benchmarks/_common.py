"""Shared by the benchmark scripts: run the bench library on chosen targets, compare with the
targets from the issue (ratios measured in the same run), write results named by machine."""

from __future__ import annotations

import shlex
import sys
from pathlib import Path
from typing import Any

from rich.console import Console

from bonedeploy.bench import render
from bonedeploy.bench.render import report
from bonedeploy.bench import BenchConfig, run_bench
from bonedeploy.bench.targets import Target
from bonedeploy.util.fs import write_json, write_text
from bonedeploy.util.machine import machine_slug

RESULTS = Path(__file__).resolve().parent / "results"


def script_command() -> str:
    """How this script was invoked, as a copy-pastable command from the repository root."""
    script = Path(sys.argv[0])
    try:
        script = script.resolve().relative_to(Path.cwd())
    except ValueError:
        pass
    return shlex.join(["python", str(script), *sys.argv[1:]])


def run_targets(targets: list[Target], config: BenchConfig, console: Console) -> dict[str, Any]:
    log = None if config.quiet else (lambda m: console.print(f"[dim]{m}[/]", highlight=False))
    return run_bench(config, log, targets).to_dict()  # bench's own orchestration: isolation, cold start


def row(d: dict[str, Any], key: str) -> dict[str, Any] | None:
    return next((r for r in d["results"] if r["key"] == key), None)


def check(name: str, measured: float | None, op: str, target: float, unit: str = "") -> dict[str, Any]:
    """One target line: PASS/FAIL/not measured, with the measured value beside the goal."""
    if measured is None:
        verdict = "not measured"
    else:
        ok = measured >= target if op == ">=" else measured <= target
        verdict = "PASS" if ok else "FAIL"
    return {"target": name, "goal": f"{op} {target:g}{unit}", "measured": measured, "verdict": verdict}


def targets_markdown(checks: list[dict[str, Any]]) -> str:
    lines = ["## Targets (ratios measured in this run)", "",
             "| target | goal | measured | verdict |", "| --- | ---: | ---: | ---: |"]
    for c in checks:
        m = c["measured"]
        lines.append(f"| {c['target']} | {c['goal']} | {'–' if m is None else f'{m:.3g}'} | {c['verdict']} |")
    return "\n".join(lines) + "\n"


def write_report(out_dir: Path, name: str, d: dict[str, Any], md: str) -> Path:
    """``<out_dir>/<name>-<machine_slug>.md`` and ``.json`` (a script's own Markdown), printed."""
    base = out_dir / f"{name}-{machine_slug(d['machine'])}"
    write_text(base.with_suffix(".md"), md)
    write_json(base.with_suffix(".json"), d)
    print(md)
    print(f"wrote {base.with_suffix('.md')}, .json")
    return base


def write_results(d: dict[str, Any], checks: list[dict[str, Any]], preamble: str,
                  out_dir: Path, suffix: str, console: Console) -> Path:
    """``<out_dir>/<machine_slug><suffix>.md|.json|.png``; the command is in every file."""
    d = {**d, "targets": checks}
    base = out_dir / f"{machine_slug(d['machine'])}{suffix}"
    md = report.to_markdown(d).replace("# bonedeploy bench", f"# {preamble.splitlines()[0]}", 1)
    body = "\n".join(preamble.splitlines()[1:]).strip()
    head, _, rest = md.partition("\n## ")
    md = head + ("\n" + body + "\n" if body else "") + "\n" + targets_markdown(checks) + "\n## " + rest
    write_text(base.with_suffix(".md"), md)
    write_json(base.with_suffix(".json"), d)
    render.write_outputs(d, plot_path=base.with_suffix(".png"))
    report.print_report(d, console)
    for c in checks:
        m = c["measured"]
        console.print(f"target: {c['target']} {c['goal']}: {'–' if m is None else f'{m:.3g}'} "
                      f"→ {c['verdict']}", highlight=False)
    console.print(f"wrote {base.with_suffix('.md')}, .json, .png", highlight=False)
    return base
