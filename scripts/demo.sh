#!/usr/bin/env bash
# One command: set up everything, then serve the bundled 4K demo title as an origin on
# http://127.0.0.1:8080/demo/master.m3u8 (Ctrl-C stops it).
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh
exec .venv/bin/edge360 serve "$@"
