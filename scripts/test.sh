#!/usr/bin/env bash
# One command: set up everything, then run every check: ruff, mypy --strict and the whole pytest
# suite (real servers on loopback, real ffmpeg, nginx, Prometheus and Chromium).
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh
.venv/bin/ruff check src tests benchmarks
.venv/bin/mypy
exec .venv/bin/pytest -q -p no:cacheprovider "$@"
