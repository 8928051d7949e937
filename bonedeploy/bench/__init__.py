"""``bonedeploy bench``: latency, throughput and accuracy parity of every artefact against the
PyTorch fp32 reference, in one report (trtexec's timing, Ultralytics' table, Polygraphy's
comparison). Modules: ``timing`` (measurement + statistics), ``targets`` (which artefacts, can
they run here), ``inputs`` (parity set, files), ``run`` (orchestration), ``plot``; rendering is in
``bonedeploy.bench.render.report``. Imports no runtime at module level.
"""

from __future__ import annotations

from typing import Any

from bonedeploy.bench.targets import Target, collect_targets, discover, precheck
from bonedeploy.bench.results import ArtefactResult, BenchConfig, BenchReport
from bonedeploy.bench.run import Runner, run_bench
from bonedeploy.bench.timing import TimingStats, measure, summarize
from bonedeploy.errors import ArtefactError, GateFailedError

__all__ = ["ArtefactResult", "BenchConfig", "BenchReport", "Runner", "Target", "TimingStats",
           "bench", "collect_targets", "discover", "measure", "precheck", "run_bench", "summarize"]


def bench(config: BenchConfig, console: Any = None, **runner_kwargs: Any) -> BenchReport:
    """Run, print the table, write the requested JSON/Markdown/PNG, then raise
    ``GateFailedError`` (exit 2) when any artefact fails its parity gate, or ``ArtefactError``
    (exit 1) when no artefact could run at all: the files are written first either way."""
    from rich.console import Console

    from bonedeploy.bench.render import report as rpt, write_outputs

    if console is None:
        console = Console()
        if not console.is_terminal:  # logs and pipes: do not squeeze the table into 80 columns
            console = Console(width=max(console.width, 140))
    log = None if config.quiet else (lambda msg: console.print(f"[dim]{msg}[/]", highlight=False))
    result = run_bench(config, log, **runner_kwargs)
    d = result.to_dict()
    if not config.quiet:
        rpt.print_report(d, console)
    for path in write_outputs(d, config.json_path, config.md_path, config.plot_path):
        if not config.quiet:
            console.print(f"wrote {path}", highlight=False)
    if config.select:
        from bonedeploy.backends.select import write_records

        for path in write_records(d):
            if not config.quiet:
                console.print(f"wrote {path}", highlight=False)
    if not any(r.ran for r in result.results):
        raise ArtefactError("nothing could be benchmarked: " + "; ".join(
            f"{r.target.label}: {r.reason}" for r in result.results))
    failed = result.gate_failures
    if failed:
        raise GateFailedError("parity gate failed for " + "; ".join(
            f"{label} ({', '.join(why)})" for label, why in failed.items()))
    return result
