#!/usr/bin/env bash
# The GPU check (issue 7): equivalence of the fast path, the benchmark, and 2-epoch paper-size
# runs, on one CUDA device, installing nothing beyond the project. Under 8 minutes on one H100.
#   HLS_DATA_SOURCE=/path/to/cifar10-jpeg.tar.gz bash scripts/gpu_check.sh
set -euo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
export HLS_HOME="${HLS_HOME:-/tmp/hls-gpu}" HLS_PROGRESS=0
PY="${PYTHON:-python3}"
$PY -c "import torch; print('torch', torch.__version__, '|', torch.cuda.get_device_name())"
nvidia-smi --query-gpu=name,memory.total,clocks.max.sm --format=csv,noheader || true
echo "== fast path vs exact (one search step)"
$PY -m hls bench --check --device cuda
echo "== benchmark"
$PY -m hls bench --device cuda --sizes paper cpu --orders 1 2 --repeats 5
echo "== 2-epoch paper-size runs (C=16, L=8, batch 128 per sampler, second order)"
for method in darts_bbn hls; do
  $PY -m hls run "$method" --profile paper --seeds 0 --set epochs=2 --device cuda
done
$PY -m hls table --profile paper --seeds 0 --set epochs=2 --methods darts_bbn hls
