#!/usr/bin/env bash
# Build the manual as a site, strictly: a broken link or anchor, a page missing from the nav, or a
# failing hook (the CLI reference is generated from the typer app) fails the build.
#
#   .ci/docs.sh [VENV]      (default: .venv; the [docs] extra is installed into it when mkdocs is missing)
#
# The site goes to a temporary folder and is removed afterwards: CI checks that it builds.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${1:-.venv}
PY="$VENV/bin/python"
[ -x "$PY" ] || { echo "docs: no python at $PY (pass the venv as \$1)" >&2; exit 2; }

if ! "$PY" -c "import mkdocs, material" 2>/dev/null; then
    "$PY" -m pip install -q -e ".[docs]"
fi

site=$(mktemp -d)
trap 'rm -rf "$site"' EXIT
NO_MKDOCS_2_WARNING=1 "$PY" -m mkdocs build --strict --config-file mkdocs.yml --site-dir "$site"
echo "docs: ok ($(find "$site" -name index.html | wc -l) pages)"
