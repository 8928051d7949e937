"""``bonedeploy sweep RECIPE DATA``: train every run of a TOML recipe (``train/seed.toml``) and
write the seed's results table beside ours.

Resumable: a run whose report says it finished is skipped, a run with a shorter ``last.pt``
is resumed, anything else starts fresh. The images are decoded once for all runs that share
the data settings. With ``devices`` (GPU indices) the runs are a queue over those GPUs instead,
one process per run (``training.sweep_queue``).
"""

from __future__ import annotations

import dataclasses
import shlex
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from bonedeploy.errors import ConfigError
from bonedeploy.util.fs import write_json
from bonedeploy.training.results import RESULT_COLUMNS, result_row, write_results
from bonedeploy.util.defaults import none_means_default

if sys.version_info >= (3, 11):
    import tomllib
else:  # Python 3.10
    import tomli as tomllib

# TrainConfig fields a recipe may set (per run or in [defaults]).
RECIPE_KEYS = ("model", "epochs", "lr", "batch_size", "weight_decay", "dropout", "seed",
               "split_seed", "val_fraction", "precision", "channels_last", "classes")
# Fields that decide which images are decoded and how they are split.
DATA_KEYS = ("data", "val", "classes", "split_seed", "val_fraction", "skip_bad")

__all__ = ["RESULT_COLUMNS", "SweepConfig", "SweepRun", "load_recipe", "plan", "result_row",
           "run_sweep", "write_results"]


@dataclass(frozen=True)
class SweepRun:
    name: str
    options: dict[str, Any]  # TrainConfig fields


@none_means_default  # None (the CLI's 'not given') means the default below
@dataclass(frozen=True)
class SweepConfig:
    recipe: str
    data: str
    out: str = "runs"
    val: str | None = None
    epochs: int | None = None  # every run trains this many epochs (quick CPU checks)
    epochs_scale: float | None = None  # or: the recipe's epochs times this
    only: tuple[str, ...] | None = None
    device: str = "auto"
    precision: str | None = None  # None: the recipe's / auto
    batch_size: int | None = None
    skip_bad: bool = False
    workers: int | None = None
    quiet: bool = False
    command: str | None = None  # recorded in results.md
    devices: tuple[str, ...] | None = None  # GPUs to queue the runs over; None or ("cpu",): in order, here


@dataclass
class SweepResult:
    out: Path
    rows: list[dict[str, Any]]
    statuses: dict[str, str] = field(default_factory=dict)

    @property
    def exit_code(self) -> int:
        """0, or 3 when a queued run failed (the sweep itself ran: its table says which)."""
        return 3 if "failed" in self.statuses.values() else 0


def load_recipe(path: str | Path) -> list[SweepRun]:
    """Parse a recipe: optional ``[defaults]`` and ``[[run]]`` tables with ``name`` + options."""
    path = Path(path)
    try:
        doc = tomllib.loads(path.read_text())
    except FileNotFoundError as e:
        raise ConfigError(f"sweep recipe not found: {path}") from e
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise ConfigError(f"{path}: not valid TOML ({e})") from e
    unknown_top = sorted(set(doc) - {"sweep", "defaults", "run"})
    if unknown_top:
        raise ConfigError(f"{path}: unknown tables {unknown_top}; valid: sweep, defaults, run")
    defaults = _options(doc.get("defaults", {}), path, "[defaults]")
    runs, seen = [], set()
    for i, table in enumerate(doc.get("run", []), 1):
        name = table.get("name")
        if not isinstance(name, str) or not name:
            raise ConfigError(f"{path}: [[run]] #{i} has no name")
        if name in seen:
            raise ConfigError(f"{path}: run name {name!r} appears twice")
        seen.add(name)
        opts = {**defaults, **_options({k: v for k, v in table.items() if k != "name"}, path, name)}
        opts.setdefault("model", name)
        runs.append(SweepRun(name, opts))
    if not runs:
        raise ConfigError(f"{path}: no [[run]] tables")
    return runs


def _options(table: dict[str, Any], path: Path, where: str) -> dict[str, Any]:
    unknown = sorted(set(table) - set(RECIPE_KEYS))
    if unknown:
        raise ConfigError(f"{path} {where}: unknown keys {unknown}; valid: {', '.join(RECIPE_KEYS)}")
    return {k: tuple(v) if k == "classes" else v for k, v in table.items()}


def select(runs: list[SweepRun], only: tuple[str, ...] | None) -> list[SweepRun]:
    if not only:
        return runs
    names = [r.name for r in runs]
    unknown = [n for n in only if n not in names]
    if unknown:
        raise ConfigError(f"--only {','.join(unknown)}: not in the recipe; runs: {', '.join(names)}")
    return [r for r in runs if r.name in only]


def run_config(run: SweepRun, cfg: SweepConfig):
    """The resolved TrainConfig of one run under the sweep's overrides."""
    from bonedeploy.training import TrainConfig

    opts = dict(run.options)
    base = TrainConfig(model=opts["model"], epochs=opts.get("epochs")).resolve()
    epochs = base.epochs
    if cfg.epochs is not None:
        epochs = cfg.epochs
    elif cfg.epochs_scale is not None:
        epochs = max(1, round(base.epochs * cfg.epochs_scale))
    opts.update(epochs=epochs, data=cfg.data, val=cfg.val, out=str(Path(cfg.out) / run.name),
                device=cfg.device, skip_bad=cfg.skip_bad, workers=cfg.workers, quiet=cfg.quiet)
    if cfg.precision is not None:
        opts["precision"] = cfg.precision
    if cfg.batch_size is not None:
        opts["batch_size"] = cfg.batch_size
    return TrainConfig(**opts).resolve()


def status(tc) -> str:
    """"done", "resume" or "new" for the run folder ``tc.out``."""
    import json

    out = Path(tc.out)
    report = out / "report.json"
    if report.is_file():
        try:
            r = json.loads(report.read_text())
        except ValueError:
            r = {}
        old = r.get("config") or {}
        for key in ("model", "data", "val"):
            if key in old and old[key] != getattr(tc, key):
                raise ConfigError(f"{out} holds a run with {key} {old[key]!r}, not {getattr(tc, key)!r}; "
                                  f"sweep into another --out")
        if r.get("completed_epochs", 0) >= tc.epochs:
            return "done"
    return "resume" if (out / "last.pt").is_file() else "new"


def plan(cfg: SweepConfig) -> list[tuple[SweepRun, Any, str]]:
    """(run, TrainConfig, status) for every selected run; validates the whole recipe first."""
    if cfg.epochs is not None and cfg.epochs_scale is not None:
        raise ConfigError("give --epochs or --epochs-scale, not both")
    if cfg.epochs_scale is not None and cfg.epochs_scale <= 0:
        raise ConfigError(f"--epochs-scale must be > 0, got {cfg.epochs_scale}")
    runs = select(load_recipe(cfg.recipe), cfg.only)
    return [(r, tc, status(tc)) for r in runs for tc in [run_config(r, cfg)]]


def run_sweep(cfg: SweepConfig, reporter_for: Callable[[str], Any] | None = None,
              log: Callable[[str], None] = lambda s: None) -> SweepResult:
    """Train the plan in order and stop at the first failing run (rerunning skips finished ones);
    with ``cfg.devices``, queue it over those GPUs, where a failed run is recorded and the rest go on."""
    from bonedeploy.training.ddp import launched_by_torchrun
    from bonedeploy.training.sweep_queue import is_queue

    if launched_by_torchrun():
        raise ConfigError("bonedeploy sweep does not run under torchrun (every worker would write the "
                          "results table): run it without torchrun, with --devices 0,1,... to queue the runs "
                          "over GPUs, or train one run with DDP: torchrun ... -m bonedeploy train")
    todo = plan(cfg)
    t_start = time.perf_counter()
    if is_queue(cfg.devices):
        statuses, failed = _run_queued(todo, cfg, log)
    else:
        statuses, failed = _run_in_order(todo, reporter_for, log), {}
    return _write_results(cfg, todo, statuses, failed, time.perf_counter() - t_start)


def _run_queued(todo, cfg: SweepConfig, log: Callable[[str], None]) -> tuple[dict[str, str], dict]:
    from bonedeploy.training.sweep_queue import Job, failures, run_queue

    if cfg.device == "cpu":
        raise ConfigError(f"--devices {','.join(cfg.devices or ())} queues the runs over GPUs but --device cpu "
                          "trains on the CPU; drop one of them")
    statuses = {run.name: st for run, _, st in todo}
    jobs = [Job(run.name, (tc.replace(resume=tc.out) if st == "resume" else tc).to_dict(), Path(tc.out))
            for run, tc, st in todo if st != "done"]
    for run, tc, st in todo:
        log(f"{run.name}: {tc.model}, {tc.epochs} epochs -- {st}" + (", skipped" if st == "done" else ", queued"))
    failed = failures(run_queue(jobs, cfg.devices or (), log=log))
    statuses.update({name: "failed" for name in failed})
    return statuses, failed


def _run_in_order(todo, reporter_for, log) -> dict[str, str]:
    from bonedeploy.training import Reporter, train
    from bonedeploy.training.dataset import load_training_data
    from bonedeploy.training.fit import model_preprocess

    cache: dict[tuple, Any] = {}
    statuses = {}
    for i, (run, tc, st) in enumerate(todo, 1):
        log(f"[{i}/{len(todo)}] {run.name}: {tc.model}, {tc.epochs} epochs -- {st}")
        statuses[run.name] = st
        if st == "done":
            continue
        reporter = reporter_for(run.name) if reporter_for else Reporter()
        spec = model_preprocess(tc.model)
        key = (*(str(getattr(tc, k)) for k in DATA_KEYS), spec)
        if key not in cache:
            cache.clear()  # keep one decoded set in memory
            cache[key] = load_training_data(tc, spec, reporter)
        if st == "resume":
            tc = dataclasses.replace(tc, resume=tc.out)
        train(tc, reporter, spec=spec, data=cache[key])
    return statuses


def _write_results(cfg: SweepConfig, todo, statuses: dict[str, str], failed: dict[str, dict],
                   seconds: float) -> SweepResult:
    out = Path(cfg.out)
    # the table covers the whole recipe: runs left out by --only appear once they have a report
    chosen = {run.name for run, _, _ in todo}
    rows = [row for run in load_recipe(cfg.recipe)
            for row in [result_row(run.name, out / run.name, failed.get(run.name))]
            if run.name in chosen or row["status"] == "done"]
    meta = {"recipe": cfg.recipe, "data": cfg.data, "out": str(out),
            "command": cfg.command or command_line(cfg),
            "seconds": seconds, "statuses": statuses}
    if failed:
        meta["failed"] = failed
    write_results(out, rows, meta)
    write_json(out / "sweep.json", {**meta, "config": dataclasses.asdict(cfg), "rows": rows})
    return SweepResult(out, rows, statuses)


def command_line(cfg: SweepConfig) -> str:
    """The equivalent ``bonedeploy sweep`` invocation, recorded in results.md."""
    args = ["bonedeploy", "sweep", cfg.recipe, cfg.data, "--out", cfg.out]
    flags = {"--val": cfg.val, "--epochs": cfg.epochs, "--epochs-scale": cfg.epochs_scale,
             "--only": ",".join(cfg.only) if cfg.only else None,
             "--device": None if cfg.device == "auto" else cfg.device, "--precision": cfg.precision,
             "--batch-size": cfg.batch_size, "--workers": cfg.workers,
             "--devices": ",".join(cfg.devices) if cfg.devices else None}
    for flag, value in flags.items():
        if value is not None:
            args += [flag, str(value)]
    args += [f for f, on in (("--skip-bad", cfg.skip_bad), ("--quiet", cfg.quiet)) if on]
    return " ".join(shlex.quote(a) for a in args)
