#!/usr/bin/env bash
# The GPU check: the benchmark, the fast path's agreement with the exact one, what each
# lever buys, where the step's device time goes, and a 2-epoch paper-size run, on one CUDA
# device, installing nothing beyond the project. About 7 minutes on one H200 (2026-11-28: bench
# 90 s, check 35 s, levers 100 s, trace 55 s, decoding the data 11 s, the run 132 s); each part
# has its own time limit, so one that hangs or fails leaves the others' output.
#   HLS_DATA_SOURCE=/path/to/cifar10-jpeg.tar.gz bash scripts/gpu_check.sh [PART ...]
# PART: bench, check, levers, trace, run (default: all five, in that order). RUN_SET: the run's
# settings, default "epochs=2 order=1": the paper profile is second order, 2.7x slower a step,
# which would take the run past the time this check is meant to fit (RUN_SET=epochs=2 for it).
set -uo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
export HLS_HOME="${HLS_HOME:-/tmp/hls-gpu}" HLS_PROGRESS=0
export CUBLAS_WORKSPACE_CONFIG=:4096:8   # lets the agreement check use deterministic cuBLAS
PY="${PYTHON:-python3}"
PARTS="${*:-bench check levers trace run}"
RUN_SET=(${RUN_SET:-epochs=2 order=1})
part() { local limit=$1; shift; echo "== $* (limit ${limit} s)"; local t0=$SECONDS
         timeout "$limit" "$@" || echo "!! exit $? after $((SECONDS - t0)) s"; }
want() { [[ " $PARTS " == *" $1 "* ]]; }
$PY -c "import torch; print('torch', torch.__version__, '|', torch.cuda.get_device_name())"
nvidia-smi --query-gpu=name,memory.total,clocks.max.sm --format=csv,noheader || true
want bench && part 170 $PY -m hls bench --device cuda --sizes paper cpu --orders 1 2 --repeats 5
want check && part 100 $PY -m hls bench --check --device cuda --data real
want levers && part 150 $PY -m hls bench --levers --device cuda --sizes paper --rounds 1 --repeats 5
want trace && part 120 $PY -m hls bench --trace --device cuda --sizes paper --orders 1 --repeats 1
if want run; then
  part 60 $PY -m hls data
  # HLS, the paper's method, at the paper's size for 2 of its 50 epochs
  sets=(); for kv in "${RUN_SET[@]}"; do sets+=(--set "$kv"); done
  part 400 $PY -m hls run hls --profile paper --seeds 0 "${sets[@]}" --device cuda
  $PY -m hls table --profile paper --seeds 0 "${sets[@]}" --methods hls
fi
