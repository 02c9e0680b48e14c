#!/usr/bin/env bash
# actmem on a GPU machine, in one go (each step bounded, a failing step does not stop the next):
#   1. the actmem tests (tests/actmem) with the model and caches on the device (MEMOS_TEST_DEVICE);
#   2. benchmarks/gpu_check_actmem.py: exactness, dump/load and eviction on the device, TTFT
#      (prefill vs injected cache) for Qwen3-shaped random models, device/serialise/disk GB/s;
#   3. benchmarks/bench_actmem.py through the gRPC service: TTFT, transfer and merge.
#
#   benchmarks/gpu_check_actmem.sh [OUT_DIR]        # default benchmarks/results/gpu
#
# Environment: DEVICE (cuda), SIZES (qwen3-0.6b,qwen3-1.7b), TOKENS (1000,6000), REPEATS (5),
# BENCH_SIZE (qwen3-0.6b), BENCH_RUNS ("1000:8 6000:2": memory tokens:merge parts per run),
# PY (python3; .venv/bin/python when it exists). A CPU dry run of the plumbing:
#   DEVICE=cpu SIZES=bench TOKENS=200,400 REPEATS=2 BENCH_SIZE=bench BENCH_RUNS="200:2" benchmarks/gpu_check_actmem.sh
# Needs torch, transformers, tokenizers, safetensors and the runtime requirements (gRPC,
# protobuf, pydantic-settings, OpenTelemetry), pytest, pytest-asyncio and pytest-timeout.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-benchmarks/results/gpu}
mkdir -p "$OUT"
PY=${PY:-$([ -x .venv/bin/python ] && echo .venv/bin/python || echo python3)}
DEVICE=${DEVICE:-cuda}
SIZES=${SIZES:-qwen3-0.6b,qwen3-1.7b}
TOKENS=${TOKENS:-1000,6000}
REPEATS=${REPEATS:-5}
BENCH_SIZE=${BENCH_SIZE:-qwen3-0.6b}
BENCH_RUNS=${BENCH_RUNS:-1000:8 6000:2}
export PYTHONUNBUFFERED=1
# The repository is the package root (as .venv's memos-dev.pth makes it); harmless when already so.
export PYTHONPATH="${PYTHONPATH:+$PYTHONPATH:}$PWD:$PWD/gen/python:$PWD/sdk/python"
LOG="$OUT/log.txt"
: >"$LOG"
failed=()

step() {  # step NAME SECONDS COMMAND...
  local name=$1 limit=$2
  shift 2
  echo "=== $name (limit ${limit}s): $*" | tee -a "$LOG"
  local t0=$SECONDS
  timeout --kill-after=10 "$limit" "$@" 2>&1 | tee -a "$LOG"
  local rc=${PIPESTATUS[0]}
  echo "=== $name: rc=$rc in $((SECONDS - t0))s" | tee -a "$LOG"
  [ "$rc" -eq 0 ] || failed+=("$name")
}

{
  echo "host: $(uname -a)"
  command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
  "$PY" -c 'import sys, torch, transformers, grpc, google.protobuf as pb; print("python", sys.version.split()[0], "torch", torch.__version__, "cuda", torch.version.cuda, "available", torch.cuda.is_available(), "transformers", transformers.__version__, "grpcio", grpc.__version__, "protobuf", pb.__version__)'
} 2>&1 | tee -a "$LOG"

# tests/conftest.py (above tests/actmem) loads the textmem stack, which these tests do not use;
# plugins are named explicitly so that whatever else the image has installed stays out.
step tests 170 env MEMOS_TEST_DEVICE="$DEVICE" PYTEST_DISABLE_PLUGIN_AUTOLOAD=1 \
  "$PY" -m pytest -p pytest_asyncio.plugin -p pytest_timeout -p no:cacheprovider --confcutdir=tests/actmem \
  tests/actmem -q -rfE --junitxml="$OUT/pytest_actmem.xml"

step gpu_check 200 "$PY" benchmarks/gpu_check_actmem.py --device "$DEVICE" --sizes "$SIZES" --tokens "$TOKENS" \
  --repeats "$REPEATS" --out "$OUT/gpu_check.json"

model_dir=$(mktemp -d)/bench-$BENCH_SIZE
for run in $BENCH_RUNS; do
  step "bench_${run%%:*}" 120 "$PY" benchmarks/bench_actmem.py --device "$DEVICE" --size "$BENCH_SIZE" \
    --model-dir "$model_dir" --memory-tokens "${run%%:*}" --merge-parts "${run##*:}" --repeats "$REPEATS" \
    --out "$OUT/bench_${run%%:*}.json"
done

if [ ${#failed[@]} -eq 0 ]; then
  echo "gpu check: all steps passed; results in $OUT" | tee -a "$LOG"
else
  echo "gpu check: FAILED steps: ${failed[*]}; results in $OUT" | tee -a "$LOG"
  exit 1
fi
