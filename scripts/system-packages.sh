#!/usr/bin/env bash
# Installs the Debian/Ubuntu packages edge360's tests and demo need (as root or through sudo):
# gcc and the Python headers (to compile the hot modules), ffmpeg, nginx, Prometheus, wrk,
# Chromium, and Node.js with npm. Only what is missing is asked for, so a second run installs
# nothing. Node.js may already come from elsewhere (NodeSource, nvm):
# NodeSource's nodejs bundles npm and conflicts with Debian's npm package, so a working npm on
# PATH is taken as enough and neither package is requested.
set -euo pipefail

PACKAGES=(python3-venv python3-dev gcc ffmpeg nginx-light prometheus wrk chromium)
if ! command -v npm >/dev/null 2>&1; then
  PACKAGES+=(nodejs npm)
fi
missing=()
for p in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ "${#missing[@]}" -eq 0 ]; then
  exit 0
fi
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
echo "setup: installing system packages: ${missing[*]}" >&2
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
