#!/usr/bin/env bash
# The GPU check, for a session lent a GPU machine (one H100/H200): what the CPU tests and
# benchmarks run, on the GPU. Installs what it needs (scripts/setup.sh: the CUDA build of
# torch on a machine with an NVIDIA GPU), then, each part under its own timeout (sum 530 s)
# and stopping at the first part that fails:
#   1. the packed engine's tests on the GPU (TUNE_EEGPT_TEST_DEVICE=cuda): gradients
#      against autograd, a trial's results independent of its pass-mates, the stacked
#      AdamW against torch's, device-resident rows (<= 90 s);
#   2. K = 1, 4, 16, 64 trials in one pass against K passes of one, on 100k rows of the
#      large encoder's 16 x 4 x 512 float16 features (6.5 GB; time is linear in the rows,
#      so x 7.47 gives TUAB's 747k), same and different seeds (<= 240 s);
#   3. a small real search through the device worker on the GPU, end to end: the default
#      corpus, 16 trials, 4 epochs (<= 200 s, the cache build included).
# Writes JSON and a log to $OUT (default benchmarks/results).
set -uo pipefail
cd "$(dirname "$0")/.."
OUT="${OUT:-benchmarks/results}"
mkdir -p "$OUT"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
export RAY_USAGE_STATS_ENABLED=0 RAY_AUTH_MODE=disabled
PY=.venv/bin/python
part() {  # part NAME SECONDS COMMAND...: runs it, stops the check when it fails
  local name=$1 limit=$2
  shift 2
  echo "== $name (<= $limit s)"
  timeout "$limit" "$@"
  local rc=$?
  [ "$rc" = 0 ] || { echo "!! $name failed (exit $rc): stopping here"; exit "$rc"; }
}
{
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
  timeout 300 bash scripts/setup.sh || { echo "!! setup failed"; exit 1; }
  part "packed engine tests on the GPU" 90 env TUNE_EEGPT_TEST_DEVICE=cuda \
    "$PY" -m pytest -q -p no:cacheprovider tests/test_packed_engine.py \
    tests/test_stacked_adamw.py tests/test_device_features.py -m "not slow"
  part "K trials in one pass, large encoder's rows" 240 "$PY" benchmarks/pack_ratio.py \
    --device cuda --shape large --rows 100000 --ks 1 4 16 64 --repeats 1 \
    --json "$OUT/pack_ratio_gpu.json"
  part "a search through the device worker" 200 "$PY" -m tune_eegpt.search \
    --num-samples 16 --epochs 4 --storage "$OUT/gpu_search" --name gpu-check
} 2>&1 | tee "$OUT/gpu_check.log"
