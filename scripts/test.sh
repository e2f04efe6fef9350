#!/usr/bin/env bash
# One command: set up everything, then run every check: ruff, mypy --strict and the whole pytest
# suite (real servers on loopback, real ffmpeg, nginx, Prometheus and Chromium).
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh
.venv/bin/ruff check src tests benchmarks scripts
.venv/bin/mypy
# two workers, one per core: most tests wait on real servers, browsers and tools; a file's tests
# stay together (their module fixtures, a packaged title or a browser profile, are made once)
exec .venv/bin/pytest -q -p no:cacheprovider -n 2 --dist loadfile "$@"
