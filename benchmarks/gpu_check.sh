#!/usr/bin/env bash
# The GPU check, for a session lent a GPU machine: large/small encoder windows per second in
# fp32 and bf16 at batch 64 and 256 with peak GPU memory, the probe epoch cached vs. live,
# how many cached-feature probe trials share one GPU (one process each, its own feature
# copy), and (issue 12) 1 and 16 trials sharing ONE device-resident copy of TUAB-sized
# features (747k rows of 16 x 4 x 512 float16 = 49 GB) through CUDA IPC, with the fused
# probe step: rows/s per trial and in all, own GPU memory per trial, ratio to the
# bandwidth floor. Needs torch (CUDA), pyarrow, scikit-learn, PyYAML and tqdm; not ray.
# Writes JSON and a log to $OUT (default benchmarks/results). Sized for <= 8 minutes on
# one H100 (80 GB), issue 12's part first: the GPU tests of the step queue and its CUDA
# graphs (<= 1 min), 1 and 16 trials on TUAB-sized features (<= 4 min), 16 on float8
# features (<= 2.5 min), one eager trial (<= 1.5 min); then the encoder at batch 256 and
# trials per GPU (~2 min). Each part has its own timeout.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT="${OUT:-benchmarks/results}"
mkdir -p "$OUT"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
{
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
  python3 -c "import torch; print('torch', torch.__version__, torch.cuda.get_device_name(0))"
  echo "== the sync-free step queue and its CUDA graphs on this GPU (issue 12)"
  timeout 60 python3 -m pytest -q -p no:cacheprovider tests/test_device_steps.py \
    tests/test_device_features.py || echo "(pytest failed or is missing here)"
  echo "== shared device-resident features, fused probe step, CUDA graphs (issue 12)"
  timeout 240 python3 benchmarks/gpu_trials.py --rows 747000 --trials 1 16 --epochs 1 \
    --json "$OUT/gpu_trials.json"
  echo "== the same with float8 (e4m3) features: half the bytes per row"
  timeout 150 python3 benchmarks/gpu_trials.py --rows 747000 --trials 16 --epochs 1 \
    --feature-dtype float8_e4m3 --json "$OUT/gpu_trials_float8.json"
  echo "== the same, one trial, kernels launched eagerly (what the graphs buy)"
  timeout 90 python3 benchmarks/gpu_trials.py --rows 100000 --trials 1 --epochs 1 \
    --graphs off --json "$OUT/gpu_trials_eager.json"
  for dtype in fp32 bf16; do
    for bs in 256; do
      echo "== encoder $dtype batch $bs"
      timeout 90 python3 benchmarks/encoder_throughput.py --device cuda --dtype "$dtype" --batch-size "$bs" \
        --repeats 10 --epoch-windows 16384 --probe-batch-size 64 --live-steps 20 \
        --json "$OUT/encoder_${dtype}_b${bs}.json"
    done
  done
  echo "== trials per GPU (cached features of the large encoder, bf16 head)"
  timeout 120 python3 benchmarks/trials_per_gpu.py --device cuda --precision bf16 --rows 40000 --epochs 2 \
    --processes 1 2 4 8 --json "$OUT/trials_per_gpu.json"
} 2>&1 | tee "$OUT/gpu_check.log"
