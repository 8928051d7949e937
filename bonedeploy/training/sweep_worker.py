"""One queued sweep run: ``python -m bonedeploy.training.sweep_worker OUT/<run>/sweep-job.json``.

Started by ``training.sweep_queue`` with one GPU visible; trains the job's TrainConfig with one
line per epoch on stdout (the run's train.log). Exit status: 0 done, the error's own status
(1, 130 for Ctrl-C) otherwise, with the error as the last line.
"""

from __future__ import annotations

import sys


def main(argv: list[str] | None = None) -> int:
    from bonedeploy.errors import BonedeployError
    from bonedeploy.training import LineReporter, TrainConfig, train
    from bonedeploy.training.sweep_queue import read_job

    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m bonedeploy.training.sweep_worker JOB.json", file=sys.stderr)
        return 2
    try:
        job = read_job(args[0])
        result = train(TrainConfig.from_dict(job["config"]), LineReporter())
    except BonedeployError as e:
        print(f"error: {e}", flush=True)
        return e.exit_code
    print(f"done: {result.best_path}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
