"""Sweep test kit: the queued-run worker with the tiny test models registered (they exist only in
tests), for ``sweep_queue.worker_argv`` to start instead of ``python -m bonedeploy.training.sweep_worker``."""

from __future__ import annotations

import os
import sys
from pathlib import Path

TESTS = Path(__file__).resolve().parent


def worker_argv(job_file: Path) -> list[str]:
    return [sys.executable, __file__, str(job_file)]


if __name__ == "__main__":
    sys.path[:0] = [str(TESTS), str(TESTS.parent)]
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    from trainkit import register_tiny

    register_tiny()
    from bonedeploy.training.sweep_worker import main

    sys.exit(main(sys.argv[1:]))
