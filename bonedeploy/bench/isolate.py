"""Time each artefact in its own process, so runtimes do not disturb each other.

ONNX Runtime's intra-op threads spin after every run, and OpenVINO keeps its own thread pool:
with both in one process taking turns, OpenVINO's batch-1 time doubled on a 2-core CPU. Here
every row runs the ordinary :class:`~bonedeploy.bench.run.Runner` in a fresh child process
(``python -m bonedeploy.bench.child JOB``), one after another, with nothing else of ours
alive; the parent only waits. Parity stays one computation: the first child picks the parity
set and, as the reference, keeps its logits; every later child gets both and gates itself with
the same code (``Runner._parity``). Peak RSS is then per artefact, from a clean process.
"""

from __future__ import annotations

import os
import pickle
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Callable

from bonedeploy.bench import targets as dsc
from bonedeploy.bench.results import ArtefactResult, BenchConfig, BenchReport

Log = Callable[[str], None]
CHILD_TIMEOUT_S = 3600.0
CHILD_MODULE = "bonedeploy.bench.child"
HOW = ("each row was timed in its own process, one after another, with no other runtime loaded "
       "(bonedeploy.bench.child)")


def run_isolated(config: BenchConfig, targets: list[dsc.Target], machine: dict[str, Any],
                 log: Log | None = None, timeout_s: float = CHILD_TIMEOUT_S) -> BenchReport:
    """Every target timed in a child process; rows that cannot run are settled without one."""
    log = log or (lambda msg: None)
    results = {t.key: ArtefactResult(t) for t in targets}
    shared: dict[str, Any] = {"inputs": None, "ref": None, "files": None}
    notes: list[str] = [HOW]
    with tempfile.TemporaryDirectory(prefix="bonedeploy-isolate-") as tmp:
        for t in sorted(targets, key=lambda t: not t.reference):  # reference first, as in-process
            res = results[t.key]
            blocked = dsc.precheck(t)
            if blocked:
                res.status, res.reason = blocked
                if t.path.is_file():
                    res.size_mb = t.path.stat().st_size / 2**20
                log(f"{t.label}: {res.status}")
                continue
            out = _run_child(Path(tmp), config, t, shared, log, timeout_s)
            if out.get("failed"):
                res.status, res.reason = dsc.STATUS_ERROR, out["failed"]
                log(f"{t.label}: {res.status} ({out['failed']})")
                continue
            results[t.key] = out["result"]
            shared["inputs"] = shared["inputs"] or out["inputs"]
            shared["ref"] = shared["ref"] or out["ref"]
            shared["files"] = shared["files"] or out["files"]
            notes += [n for n in out["notes"] if n not in notes]
    inputs = shared["inputs"]
    data = inputs.describe() if inputs is not None else {}
    if shared["files"] is not None:
        data["e2e_files"] = shared["files"]
    ref = shared["ref"]
    return BenchReport(config, machine, [results[t.key] for t in targets], data, notes,
                       reference=ref["key"] if ref else None, parity_set=inputs)


def _run_child(tmp: Path, config: BenchConfig, target: dsc.Target, shared: dict[str, Any],
               log: Log, timeout_s: float) -> dict[str, Any]:
    job, answer = tmp / f"{target.key}.job", tmp / f"{target.key}.out"
    job = job.with_name(_safe(job.name))
    answer = answer.with_name(_safe(answer.name))
    with open(job, "wb") as fh:
        pickle.dump({"config": config, "target": target, "inputs": shared["inputs"],
                     "ref": shared["ref"], "answer": str(answer)}, fh)
    cmd = [sys.executable, "-m", CHILD_MODULE, str(job)]
    try:
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                env=child_env())
    except OSError as e:
        return {"failed": f"cannot start a benchmark process ({e})"}
    tail: list[str] = []
    started = time.monotonic()
    timer = threading.Timer(timeout_s, proc.kill)  # a hung runtime must not hang the bench
    timer.start()
    try:
        assert proc.stdout is not None
        for line in proc.stdout:  # the child's log, passed through as it runs
            line = line.rstrip("\n")
            if line.startswith("log: "):
                log(line[5:])
            else:
                tail = (tail + [line])[-5:]
        proc.wait()
    except BaseException:
        proc.kill()
        proc.wait()
        raise
    finally:
        timer.cancel()
    if time.monotonic() - started >= timeout_s and not answer.is_file():
        return {"failed": f"the benchmark process ran past {timeout_s:g} s and was stopped"}
    if proc.returncode != 0 or not answer.is_file():
        why = " | ".join(tail) or "no output"
        return {"failed": f"the benchmark process exited {proc.returncode}: {why[-400:]}"}
    with open(answer, "rb") as fh:
        out = pickle.load(fh)
    if out.get("inputs_error"):
        from bonedeploy.bench.results import InputsError

        raise InputsError(out["inputs_error"])
    return out


def child_env() -> dict[str, str]:
    """Our environment, with the bonedeploy this process imported first on the path."""
    env = dict(os.environ)
    here = str(Path(__file__).resolve().parents[2])  # the bonedeploy the parent imported
    env["PYTHONPATH"] = here + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    return env


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in ".-_" else "_" for c in name)
