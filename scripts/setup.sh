#!/usr/bin/env bash
# Installs everything edge360 needs on a fresh Debian/Ubuntu machine with Python 3.11+:
# system packages (as root or through sudo), a virtualenv in .venv with edge360 and its test tools,
# and the npm packages (hls.js for the player page, playwright-core for the browser test).
# Safe to run again: every step is idempotent.
set -euo pipefail
cd "$(dirname "$0")/.."

./scripts/system-packages.sh

PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
.venv/bin/python -m pip install -q --disable-pip-version-check --upgrade pip >/dev/null
.venv/bin/python -m pip install -q --disable-pip-version-check -e '.[dev]'
# the hot modules compiled with mypyc (docs/ARCHITECTURE.md, "Compiled modules"); nothing is
# rebuilt while the sources match the last build
.venv/bin/python scripts/build_native.py

if [ ! -d node_modules/hls.js ] || [ package.json -nt node_modules/.package-lock.json ]; then
  npm install --no-audit --no-fund --loglevel=error >/dev/null
fi
mkdir -p src/edge360/static/vendor
cp node_modules/hls.js/dist/hls.min.js src/edge360/static/vendor/hls.min.js
