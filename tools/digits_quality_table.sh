#!/usr/bin/env bash
# The measured digits-IS / digits-FID table of docs/metrics.md: every row is one `run_cifar.py reproduce
# --features=digits` (the IS / FID code fed by the digits classifier), then the rows are joined into one table.
# Usage (from the repository root, after `make demo` or scripts/demo.py):
#   bash tools/digits_quality_table.sh DEMO_MODEL_DIR OUT_DIR [NUM_SAMPLES=500]
# It trains the "untrained" baseline (the demo's configuration, 1 step at learning rate 0: the initial weights)
# into OUT_DIR/untrained. Rows whose results.json exist are kept, so an interrupted run continues. The few-step
# solvers' rows (5 to 50 network calls) go into OUT_DIR/solver_table.md, and tools/digits_solver_curves.py draws
# their digits-FID against network calls into $PLOT (default OUT_DIR/digits_fid_vs_calls.png).
set -euo pipefail
cd "$(dirname "$0")/.."
MODEL_DIR="${1:?usage: tools/digits_quality_table.sh DEMO_MODEL_DIR OUT_DIR [NUM_SAMPLES]}"
OUT="${2:?usage: tools/digits_quality_table.sh DEMO_MODEL_DIR OUT_DIR [NUM_SAMPLES]}"
N="${3:-500}"
PY="${PYTHON:-.venv/bin/python}"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
if [ ! -f "$MODEL_DIR/kwargs.json" ]; then
  echo "error: DEMO_MODEL_DIR=$MODEL_DIR has no kwargs.json; expected the model/ directory of a demo run" >&2
  exit 1
fi
mkdir -p "$OUT"
row() {  # row NAME FLAGS...
  local name="$1"; shift
  if [ ! -f "$OUT/$name/results.json" ]; then
    "$PY" scripts/run_cifar.py reproduce --features=digits --num_samples="$N" --batch_size="$N" \
      --out_dir="$OUT/$name" "$@"
  fi
}
row real_train --real_split=train --dataset=digits --resolution="$(
  "$PY" -c 'import json, sys; print(json.load(open(sys.argv[1]))["image_size"])' "$MODEL_DIR/kwargs.json")"
row real_test --real_split=test --dataset=digits --resolution="$(
  "$PY" -c 'import json, sys; print(json.load(open(sys.argv[1]))["image_size"])' "$MODEL_DIR/kwargs.json")"
# the rows most looked at first (an interrupted run continues where it stopped)
for S in 50 10 20; do
  row ddim${S}_ema --model_dir="$MODEL_DIR" --sampler=ddim --num_inference_steps=$S
done
row ddpm1000_ema --model_dir="$MODEL_DIR"
# the few-step solvers (and DDIM for the curve) at 5, 10, 15, 20 and 50 network calls, each with its defaults
# (order 2, linspace spacing); heun makes 2S - 1 calls for S steps: S = (C + 1) // 2, the most steps within C calls
# (5, 9, 15, 19, 49 calls)
SOLVER_ROWS=()
for C in 10 20 5 15 50; do
  for SAMPLER in ddim dpmsolver++ unipc sde-dpmsolver++ euler euler_ancestral heun; do
    S=$C
    [ "$SAMPLER" = heun ] && S=$(( (C + 1) / 2 ))
    [ "$SAMPLER" = ddim ] && { [ "$C" = 10 ] || [ "$C" = 20 ] || [ "$C" = 50 ]; } && continue  # rows above
    row ${SAMPLER}_c${C}_ema --model_dir="$MODEL_DIR" --sampler=$SAMPLER --num_inference_steps=$S
    SOLVER_ROWS+=("${SAMPLER}_c${C}_ema")
  done
done
# spacing or clipping? DDIM's default visits t = 0, 100, ..., 900 and clips x_0; the solvers start at t = 999
# (linspace) and never clip
row ddim10_linspace_ema --model_dir="$MODEL_DIR" --sampler=ddim --num_inference_steps=10 --skip_type=linspace
row dpmsolver++_c10_uniform_ema --model_dir="$MODEL_DIR" --sampler=dpmsolver++ --num_inference_steps=10 \
  --skip_type=uniform
row dpmsolver++_c10_trailing_ema --model_dir="$MODEL_DIR" --sampler=dpmsolver++ --num_inference_steps=10 \
  --skip_type=trailing
SOLVER_ROWS+=(ddim10_linspace_ema dpmsolver++_c10_uniform_ema dpmsolver++_c10_trailing_ema)
row ddim100_ema --model_dir="$MODEL_DIR" --sampler=ddim --num_inference_steps=100
row ddim50q_ema --model_dir="$MODEL_DIR" --sampler=ddim --num_inference_steps=50 --skip_type=quad
row pndm50_ema --model_dir="$MODEL_DIR" --sampler=pndm --num_inference_steps=50
row ddim50_noema --model_dir="$MODEL_DIR" --sampler=ddim --num_inference_steps=50 --noema
if [ ! -f "$OUT/untrained/checkpoint" ]; then
  "$PY" - "$MODEL_DIR/kwargs.json" "$OUT/untrained" <<'PYEOF'
import inspect, json, sys
sys.path.insert(0, 'scripts')
import run_cifar
kwargs = json.load(open(sys.argv[1]))
kwargs = {k: v for k, v in kwargs.items() if k in inspect.signature(run_cifar.train).parameters}
kwargs.update(exp_name='untrained', model_dir=sys.argv[2], max_steps=1, max_train_secs=None)
run_cifar.train(**kwargs)
PYEOF
fi
row untrained_ddim50 --model_dir="$OUT/untrained" --sampler=ddim --num_inference_steps=50
{
  head -n 2 "$OUT/real_test/table.md"
  for name in real_train real_test ddpm1000_ema ddim10_ema ddim20_ema ddim50_ema ddim100_ema ddim50q_ema pndm50_ema \
              ddim50_noema untrained_ddim50; do
    grep '^| \*\*measured' "$OUT/$name/table.md"
  done
} > "$OUT/table.md.tmp"
{
  head -n 2 "$OUT/real_test/table.md"
  for name in "${SOLVER_ROWS[@]}"; do
    grep '^| \*\*measured' "$OUT/$name/table.md"
  done
} > "$OUT/solver_table.md.tmp"
mv "$OUT/solver_table.md.tmp" "$OUT/solver_table.md"
mv "$OUT/table.md.tmp" "$OUT/table.md"
cat "$OUT/table.md"
"$PY" tools/digits_quality_checks.py "$OUT"
# the solvers' rows against network calls: a table, which sampler first reaches DDIM-50 / DDPM-1000, and the plot
"$PY" tools/digits_solver_curves.py "$OUT" "${PLOT:-$OUT/digits_fid_vs_calls.png}"
