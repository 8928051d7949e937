#!/usr/bin/env bash
# The edge box: the wheel installed non-editable into a fresh venv with the base dependencies only
# (no torch, no scikit-learn/scipy/matplotlib), then the packaged export profiles and `infer` on a
# tiny ONNX model. Usage: .ci/edge.sh MAIN_VENV (the full dev install: it builds the model and images).
set -euo pipefail
cd "$(dirname "$0")/.."
main_venv=$(realpath "${1:-.venv}")
repo=$PWD
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
edge="$work/venv"

"$main_venv/bin/pip" wheel -q --no-deps --wheel-dir "$work/dist" .
python3 -m venv "$edge"
"$edge/bin/pip" install -q "$work"/dist/bonedeploy-*.whl
cd "$work"  # away from the checkout: nothing may come from its files

if "$edge/bin/python" -c "import torch" 2>/dev/null; then
    echo "edge: torch is importable in the base install"; exit 1
fi
for mod in sklearn scipy matplotlib; do
    if "$edge/bin/python" -c "import $mod" 2>/dev/null; then
        echo "edge: $mod is in the base install (it belongs to the [report] extra)"; exit 1
    fi
done

# Export profiles must ship inside the package.
if "$edge/bin/bonedeploy" export --help | grep -q -- "--list-profiles"; then
    listing=$("$edge/bin/bonedeploy" export --list-profiles)
else
    listing=$("$edge/bin/python" -c "from bonedeploy.export.profiles import available_profiles; print('\n'.join(available_profiles()))")
fi
for name in edge-cpu jetson server-gpu; do
    grep -qw -- "$name" <<<"$listing" || { echo "edge: export profile $name is not packaged; found: $listing"; exit 1; }
done

# A tiny ONNX model and 6 labelled synthetic images, made with the full install.
"$main_venv/bin/python" -c "import sys; sys.path.insert(0, sys.argv[2] + '/tests'); from onnxkit import tiny_onnx_classifier; tiny_onnx_classifier(sys.argv[1])" \
    "$work/tiny.onnx" "$repo"
"$main_venv/bin/bonedeploy" synth "$work/imgs" --n 6 --quiet
"$edge/bin/bonedeploy" infer --engine "$work/tiny.onnx" "$work/imgs" --out "$work/preds.csv" --workers 0 \
    | tee "$work/infer.log"
n_images=$(find "$work/imgs" -name '*.png' | wc -l)
n_rows=$("$edge/bin/python" -c "import csv, sys; print(sum(1 for _ in csv.DictReader(open(sys.argv[1]))))" "$work/preds.csv")
[ "$n_images" -eq 6 ] && [ "$n_rows" -eq "$n_images" ] || { echo "edge: $n_rows rows for $n_images images"; exit 1; }
{ grep -q "metrics on $n_images labelled images" "$work/infer.log" && [ -s "$work/preds.metrics.json" ]; } || { echo "edge: no metrics on the base install (they are numpy)"; exit 1; }
echo "edge: ok (base install, $n_rows rows, profiles: $(tr '\n' ' ' <<<"$listing"))"
