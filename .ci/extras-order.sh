#!/usr/bin/env bash
# `serve` beside the other extras, installed one at a time into a fresh venv in the order that once
# broke it (issue 23): [train,test], then [serve], then [explain]. grad-cam's newest opencv asked for
# numpy >= 2, pip lifted numpy past nvidia-pytriton's numpy < 2, and Triton's Python-backend stub
# (built for numpy 1) answered with empty tensors and died on file bytes. Then:
#   1. `pip check`: the environment is consistent;
#   2. the serve smoke test: tensors and file bytes over gRPC equal in-process infer;
#   3. every other installable extra, resolved on top (dry run): none may move numpy;
#   4. numpy 2 forced in: `serve` refuses before it opens a port, in one line naming the fix.
# Usage: bash .ci/extras-order.sh   (about 3 min on 2 cores with pip's local cache)
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$PWD
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
venv="$work/venv"
py="$venv/bin/python"
say() { echo "extras-order: $*"; }

python3 -m venv "$venv"
# --no-compile: byte-compiling torch is a third of its install; the test imports compile what they use.
install() { say "pip install -e .[$1]"; "$venv/bin/pip" install -q --no-compile -e ".[$1]"; }
install train,test
install serve
install explain
"$venv/bin/pip" check
say "numpy $("$py" -c 'import numpy; print(numpy.__version__)') after the breaking order"

"$py" -m pytest -q -p no:cacheprovider \
    "tests/serve/test_server.py::test_tensors_and_file_bytes_match_in_process_infer[grpc]"

# Each extra not installed yet, resolved on top of these: the versions pip would pick must leave numpy.
others=$("$py" - <<'EOF'
import tomllib
extras = tomllib.load(open("pyproject.toml", "rb"))["project"]["optional-dependencies"]
skip = {"train", "test", "serve", "explain", "report", "all", "tensorrt"}  # installed, or no GPU here
print(",".join(sorted(set(extras) - skip)))
EOF
)
if [ -n "$others" ]; then
    say "dry run: pip install -e .[$others]"
    "$venv/bin/pip" install -q --dry-run --report "$work/others.json" -e ".[$others]"
    "$py" - "$work/others.json" <<'EOF'
import json, sys
moved = [i["metadata"]["version"] for i in json.load(open(sys.argv[1]))["install"]
         if i["metadata"]["name"].lower() == "numpy"]
if moved:
    sys.exit(f"extras-order: installing them would move numpy to {moved[0]} (nvidia-pytriton needs < 2)")
EOF
fi

# numpy 2 anyway (a user's own upgrade): serve must refuse before it starts anything.
"$py" -c "import sys; sys.path.insert(0, 'tests'); from onnxkit import tiny_onnx_classifier; tiny_onnx_classifier(sys.argv[1])" \
    "$work/tiny.onnx"
"$venv/bin/pip" install -q --no-compile "numpy>=2" 2>/dev/null  # pip warns of the conflict it makes
cd "$work"
set +e
timeout 60 "$venv/bin/bonedeploy" serve tiny.onnx --http-port 18611 --grpc-port 18612 --metrics-port 18613 \
    >"$work/serve.out" 2>"$work/serve.err"
rc=$?
set -e
cat "$work/serve.err"
if [ "$rc" -ne 1 ] || [ "$(wc -l <"$work/serve.err")" -ne 1 ] || ! grep -q "pip install 'numpy<2'" "$work/serve.err" \
    || grep -q "ready;" "$work/serve.out"; then
    say "under numpy 2, serve exited $rc instead of refusing in one line"; exit 1
fi
cd "$repo"
say "ok"
