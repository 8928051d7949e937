"""The child side of ``bench.isolate``: one benchmark row in a process of its own
(``python -m bonedeploy.bench.child JOB``). Separate from ``isolate`` so that ``run`` (which
starts children through ``isolate``) and the children (which run ``run.Runner``) import one way."""

from __future__ import annotations

import os
import pickle
import sys
from typing import Any

from bonedeploy.bench.results import ArtefactResult


def child_main(job_path: str) -> int:
    """One row: the ordinary Runner on one target, its reference and parity set given."""
    from bonedeploy.bench.results import InputsError
    from bonedeploy.bench.run import Runner

    with open(job_path, "rb") as fh:
        job = pickle.load(fh)
    runner = Runner(job["config"], log=lambda msg: print("log: " + msg, flush=True),
                    inputs=job["inputs"])
    if job["ref"] is not None:
        runner.ref_logits, runner.ref_label, runner.ref_key = (job["ref"][k] for k in ("logits", "label", "key"))
    res = ArtefactResult(job["target"])
    out: dict[str, Any] = {}
    try:
        runner._run_one(res)
        res.describe["process"] = os.getpid()
    except InputsError as e:
        out["inputs_error"] = str(e)
    finally:
        runner._tmp.cleanup()
    out.update(result=res, inputs=runner.inputs, notes=runner.notes,
               files=len(runner.files) if runner.files is not None else None,
               ref=None if runner.ref_logits is None else
               {"logits": runner.ref_logits, "label": runner.ref_label, "key": runner.ref_key})
    with open(job["answer"], "wb") as fh:
        pickle.dump(out, fh)
    return 0


if __name__ == "__main__":
    sys.exit(child_main(sys.argv[1]))
