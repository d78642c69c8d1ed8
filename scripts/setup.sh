#!/usr/bin/env bash
# Set up facebench on a fresh Debian machine with Python 3.11 (root or sudo).
# Installs the system library open3d needs, torch (pinned, only if none is installed: an
# unpinned resolve would pull the multi-GB CUDA build), then facebench with its test extra
# (which includes the scoring service's and the dask cluster's dependencies).
set -euo pipefail
cd "$(dirname "$0")/.."
export DEBIAN_FRONTEND=noninteractive
SUDO=""
if [ "$(id -u)" -ne 0 ] && command -v sudo >/dev/null 2>&1; then SUDO="sudo"; fi
if command -v apt-get >/dev/null 2>&1; then
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq --no-install-recommends libusb-1.0-0 libgomp1 >/dev/null
  # a C compiler for the rasterizer's CPU kernel (facebench/render/native.py, built on first use;
  # without one the pure-torch passes run, about 4x slower, and its tests skip)
  $SUDO apt-get install -y -qq --no-install-recommends gcc libc6-dev >/dev/null
  # the scoring service's browser test (tests/test_serve.py): Debian's headless Chromium and its
  # driver (selenium comes with the test extra); FACEBENCH_NO_BROWSER=1 skips them (the test then skips)
  if [ "${FACEBENCH_NO_BROWSER:-0}" != "1" ]; then
    $SUDO apt-get install -y -qq --no-install-recommends chromium chromium-driver >/dev/null
  fi
fi
PY=${PYTHON:-python3}
if ! "$PY" -c "import torch" >/dev/null 2>&1; then
  "$PY" -m pip install --quiet "torch==2.13.0"
fi
"$PY" -m pip install --quiet -e ".[test]"
