#!/usr/bin/env bash
# Creates benchmarks/.venv-mkl: the project's Python 3.7 stack with Intel's MKL-DNN build of TensorFlow
# (intel-tensorflow==1.15.2, the last 1.15 release with a Python 3.7 wheel) in place of the stock tensorflow==1.15.5,
# so that the benchmark can measure ours on both builds. Idempotent: re-running installs only when the pins changed.
# Usage (from the repository root):  bash benchmarks/make_mkl_venv.sh   [PYTHON37=/path/to/python3.7]
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON37="${PYTHON37:-$(command -v python3.7 || true)}"
VENV=benchmarks/.venv-mkl
if [ -z "$PYTHON37" ] || ! "$PYTHON37" -c 'import sys; assert sys.version_info[:2] == (3, 7)' 2>/dev/null; then
  echo "error: Python 3.7 not found (got '${PYTHON37}'); set PYTHON37=/path/to/python3.7" >&2
  exit 1
fi
REQS="$(mktemp)"
trap 'rm -f "$REQS"' EXIT
# The same pins as requirements.txt, with the TensorFlow wheel swapped.
sed 's/^tensorflow==.*/intel-tensorflow==1.15.2/' requirements.txt > "$REQS"
grep -q '^intel-tensorflow==1.15.2$' "$REQS" || { echo "error: no tensorflow pin found in requirements.txt" >&2; exit 1; }
STAMP="$VENV/.installed-$(cat "$REQS" setup.py | md5sum | cut -c1-12)"
if [ -f "$STAMP" ]; then
  echo "$VENV is up to date"
  exit 0
fi
if [ ! -x "$VENV/bin/python" ]; then
  "$PYTHON37" -m venv "$VENV"
fi
"$VENV/bin/python" -m pip install -q --disable-pip-version-check --upgrade 'pip<24' 'setuptools<68' wheel
"$VENV/bin/python" -m pip install -q --disable-pip-version-check -r "$REQS"
"$VENV/bin/python" -m pip install -q --disable-pip-version-check --no-deps -e .
"$VENV/bin/python" -c 'import tensorflow as tf; from tensorflow.python import pywrap_tensorflow as p; assert p.IsMklEnabled(), "not an MKL build"; print("ok: tensorflow", tf.__version__, "(MKL)")'
touch "$STAMP"
