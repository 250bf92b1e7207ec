#!/usr/bin/env bash
# Creates benchmarks/.venv-tf2: diffusion_tf's core on TensorFlow 2.11 (tensorflow-cpu==2.11.0, the last release with
# a Python 3.7 wheel) through tf.compat.v1, the graph-mode API the library is written against. TF 2.11's x86 wheels
# run convolutions and matmuls through oneDNN (TF_ENABLE_ONEDNN_OPTS, on by default since 2.9), so the benchmark can
# measure the same graph on modern kernels. Only the model, diffusion and optimizer code are used there; the
# scripts' TPUEstimator / tfds / tfgan stack stays on TF 1.15. Idempotent: re-running installs only when the pins changed.
# Usage (from the repository root):  bash benchmarks/make_tf2_venv.sh   [PYTHON37=/path/to/python3.7]
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON37="${PYTHON37:-$(command -v python3.7 || true)}"
VENV=benchmarks/.venv-tf2
PINS=(tensorflow-cpu==2.11.0 numpy==1.21.6 protobuf==3.19.6 pillow==9.5.0 scipy==1.7.3)
if [ -z "$PYTHON37" ] || ! "$PYTHON37" -c 'import sys; assert sys.version_info[:2] == (3, 7)' 2>/dev/null; then
  echo "error: Python 3.7 not found (got '${PYTHON37}'); set PYTHON37=/path/to/python3.7" >&2
  exit 1
fi
STAMP="$VENV/.installed-$(printf '%s ' "${PINS[@]}" | cat - setup.py | md5sum | cut -c1-12)"
if [ -f "$STAMP" ]; then
  echo "$VENV is up to date"
  exit 0
fi
if [ ! -x "$VENV/bin/python" ]; then
  "$PYTHON37" -m venv "$VENV"
fi
"$VENV/bin/python" -m pip install -q --disable-pip-version-check --upgrade 'pip<24' 'setuptools<68' wheel
"$VENV/bin/python" -m pip install -q --disable-pip-version-check "${PINS[@]}"
"$VENV/bin/python" -m pip install -q --disable-pip-version-check --no-deps -e .
"$VENV/bin/python" -c 'import tensorflow as tf; print("ok: tensorflow", tf.__version__)'
touch "$STAMP"
