#!/usr/bin/env bash
# bench/gpu_check.py on the lent GPU machine, from the repository root, with .whl and .gpu_data carried
# (`python bench/gpu_check.py --prepare .gpu_data` writes the latter). The carried wheels go to /tmp/site, ahead of
# the machine's own packages (none of them is torch: its CUDA build stays); the project runs from the checkout.
# Results and logs go to $OUT (bench/results when unset); arguments are passed on to the script.
# PYTHON and GPU_CHECK_WHEELS replace python3 and .whl (a local rehearsal with another interpreter).
set -o pipefail
out="${OUT:-bench/results}" python="${PYTHON:-python3}" wheels="${GPU_CHECK_WHEELS:-.whl}"
mkdir -p "$out" || exit 1
"$python" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site \
    "$wheels"/*.whl || exit 1
export PYTHONPATH="/tmp/site:$PWD" PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1
"$python" bench/gpu_check.py --data_dir .gpu_data/re-docred --encoder_dir .gpu_data/minilm --out "$out/gpu.json" \
    "$@" 2>&1 | tee "$out/gpu_check.log"
