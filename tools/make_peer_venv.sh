#!/usr/bin/env bash
# Creates .venv-peer: a Python 3.11 venv with PyTorch (CPU) and diffusers, used only OFFLINE by tools
# (tests/fixtures/make_diffusers_fixture.py) and benchmarks to compare against the reference PyTorch implementation.
# The product itself never imports torch. Idempotent: re-running checks the pins and installs only what is missing.
# Usage (from the repository root):  bash tools/make_peer_venv.sh   [PYTHON311=/path/to/python3.11] [VENV=.venv-peer]
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON311="${PYTHON311:-$(command -v python3.11 || true)}"
VENV="${VENV:-.venv-peer}"
# torch 2.13.0 has a CPU wheel on the local disk; a newer or unpinned torch would pull a multi-GB CUDA build.
PINS=(torch==2.13.0 diffusers==0.42.1 safetensors==0.8.0 numpy==2.4.6)
if [ -z "$PYTHON311" ] || ! "$PYTHON311" -c 'import sys; assert sys.version_info[:2] == (3, 11)' 2>/dev/null; then
  echo "error: Python 3.11 not found (got '${PYTHON311}'); set PYTHON311=/path/to/python3.11" >&2
  exit 1
fi
if [ ! -x "$VENV/bin/python" ]; then
  "$PYTHON311" -m venv "$VENV"
fi
# Keep the venv out of git without touching the repository's .gitignore.
echo '*' > "$VENV/.gitignore"

STAMP="$VENV/.installed-$(printf '%s ' "${PINS[@]}" | md5sum | cut -c1-12)"
if [ -f "$STAMP" ]; then
  echo "$VENV is up to date (${PINS[*]})"
  exit 0
fi
"$VENV/bin/python" -m pip install -q --disable-pip-version-check "${PINS[@]}"
touch "$STAMP"
echo "$VENV ready: $("$VENV/bin/python" -c 'import torch, diffusers; print("torch", torch.__version__, "diffusers", diffusers.__version__)')"
