#!/usr/bin/env bash
# The GPU check, for a session lent a GPU machine: large/small encoder windows per second in
# fp32 and bf16 at batch 64 and 256 with peak GPU memory, the probe epoch cached vs. live,
# and how many cached-feature probe trials share one GPU. Needs torch (CUDA), pyarrow,
# scikit-learn, PyYAML and tqdm; not ray. Writes JSON and a log to $OUT (default
# benchmarks/results). About 4 minutes on one H100/H200.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT="${OUT:-benchmarks/results}"
mkdir -p "$OUT"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
{
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
  python3 -c "import torch; print('torch', torch.__version__, torch.cuda.get_device_name(0))"
  for dtype in fp32 bf16; do
    for bs in 64 256; do
      echo "== encoder $dtype batch $bs"
      python3 benchmarks/encoder_throughput.py --device cuda --dtype "$dtype" --batch-size "$bs" \
        --repeats 10 --epoch-windows 16384 --probe-batch-size 64 --live-steps 20 \
        --json "$OUT/encoder_${dtype}_b${bs}.json"
    done
  done
  echo "== trials per GPU (cached features of the large encoder, bf16 head)"
  python3 benchmarks/trials_per_gpu.py --device cuda --precision bf16 --rows 40000 --epochs 2 \
    --processes 1 2 4 8 --json "$OUT/trials_per_gpu.json"
} 2>&1 | tee "$OUT/gpu_check.log"
