#!/usr/bin/env bash
# The device check of issue 15, as one script: at most about 8 minutes on one GPU.
#
#   benchmarks/gpu_check.sh [OUT_DIR]        # default: $OUT, else runs/gpu_check
#
# Writes, into OUT_DIR: jax_main.json (bf16 matmul peak, the pre-training step at the paper config
# with its compile time and analytic MFU, evaluation), torch.json (torch_reference.py's same
# pre-training step, AMP bf16 + channels-last), jax_finetune.json (the fine-tuning step, run last
# under the time left because its compile is the longest), status.json (each part's exit code;
# 124 = stopped by the time budget) and gpu_check.json (the headline numbers of all of them).
#
# Environment:
#   GPU_CHECK_SIZE=paper|tiny   paper (default): ResNet-101 x2 at 256 px, batches 64 / 20+20 / 256;
#                               tiny: configs/smoke.py sizes, batch 2 (the CPU test of this script)
#   GPU_CHECK_BUDGET_S=470      wall-clock budget of the whole check, in seconds
#   GPU_CHECK_SCAN_BLOCKS=1     1 (default): model.scan_blocks on, so the fine-tuning compile fits
#                               the budget; 0: the unrolled encoders (the configs' default)
#   PYTHON, TORCH_PYTHON        interpreters for the JAX and the torch parts (default: .venv's
#                               python if present, else python3; TORCH_PYTHON defaults to PYTHON).
#                               The torch part is skipped when TORCH_PYTHON cannot import torch.
# Needs JAX (with CUDA on a GPU), flax, optax, numpy, ml-collections; never TensorFlow, TFDS or clu.
set -uo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
OUT_DIR="${1:-${OUT:-$ROOT/runs/gpu_check}}"
SIZE="${GPU_CHECK_SIZE:-paper}"
BUDGET="${GPU_CHECK_BUDGET_S:-470}"
if [[ -z "${PYTHON:-}" ]]; then
  if [[ -x "$ROOT/.venv/bin/python" ]]; then PYTHON="$ROOT/.venv/bin/python"; else PYTHON=python3; fi
fi
TORCH_PYTHON="${TORCH_PYTHON:-$PYTHON}"
mkdir -p "$OUT_DIR"
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"
START=$(date +%s)
left() { echo $(( BUDGET - ($(date +%s) - START) )); }
declare -A STATUS

run_part() {  # name, seconds allowed, command...
  local name=$1 limit=$2; shift 2
  if (( limit < 5 )); then echo "[gpu_check] $name: no time left, skipped"; STATUS[$name]=skipped; return; fi
  echo "[gpu_check] $name (at most ${limit}s) ..."
  timeout --signal=TERM --kill-after=10 "$limit" "$@"
  STATUS[$name]=$?
  echo "[gpu_check] $name: exit ${STATUS[$name]} after $(( $(date +%s) - START ))s in all"
}

# 1. JAX: peak, pre-training step, evaluation (leaves time for torch and fine-tuning).
run_part jax_main $(( $(left) * 55 / 100 )) \
  "$PYTHON" "$ROOT/benchmarks/gpu_check.py" --part=main --size="$SIZE" --output="$OUT_DIR/jax_main.json"

# 2. PyTorch reference of the same pre-training step.
if "$TORCH_PYTHON" -c "import torch" 2>/dev/null; then
  if [[ "$SIZE" == tiny ]]; then
    TORCH_ARGS=(--depth=18 --width=0.125 --image_size=32 --batch_size=2 --deconv_features=16
                --proj_hidden=16 --proj_dim=8 --steps=1 --repeats=1 --warmup=0 --peak_size=128
                --threads=1)  # on a shared CPU, spinning OpenMP threads stall each other
  else
    TORCH_ARGS=(--depth=101 --image_size=256 --batch_size="${GPU_CHECK_PRETRAIN_BATCH:-64}"
                --amp --channels_last --steps=5 --repeats=3 --warmup=2)
  fi
  run_part torch $(( $(left) * 35 / 100 )) \
    "$TORCH_PYTHON" "$ROOT/benchmarks/torch_reference.py" --model=dual "${TORCH_ARGS[@]}" \
    --output="$OUT_DIR/torch.json"
else
  echo "[gpu_check] torch not importable by $TORCH_PYTHON: torch part skipped"
  STATUS[torch]=no_torch
fi

# 3. JAX fine-tuning step, with whatever time is left.
run_part jax_finetune $(( $(left) - 5 )) \
  "$PYTHON" "$ROOT/benchmarks/gpu_check.py" --part=finetune --size="$SIZE" \
  --output="$OUT_DIR/jax_finetune.json"

{
  echo "{"
  sep=""
  for k in "${!STATUS[@]}"; do printf '%s  "%s": "%s"' "$sep" "$k" "${STATUS[$k]}"; sep=$',\n'; done
  printf '\n}\n'
} > "$OUT_DIR/status.json"
"$PYTHON" "$ROOT/benchmarks/gpu_check.py" --part=summary --output="$OUT_DIR"
echo "[gpu_check] done in $(( $(date +%s) - START ))s; JSON in $OUT_DIR"
[[ "${STATUS[jax_main]}" == 0 && "${STATUS[jax_finetune]}" == 0 ]]
