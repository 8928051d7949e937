#!/usr/bin/env bash
# The GPU check in one device command (steps, timeouts and budget: benchmarks/gpu_check.py).
#
#   timeout 540 bash benchmarks/gpu_check.sh          # results in $OUT (else out/gpu-check)
#   bash benchmarks/gpu_check.sh --dry --out /tmp/gc   # toy sizes, any machine
#
# .whl/*.whl (packages the image lacks) are installed by the check itself, into its --target
# folder. exec: `timeout`'s SIGTERM reaches the check, which then stops the running step and
# still writes summary.md/json and the results tar.
set -euo pipefail
cd "$(dirname "$0")/.."
export PYTHONUNBUFFERED=1
exec "${PYTHON:-python3}" benchmarks/gpu_check.py "$@"
