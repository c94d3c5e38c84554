#!/usr/bin/env bash
# The one prepared script for a lent GPU machine (../.library/device/README.md): one command of at
# most 10 minutes, so that a task's 15 minutes of device time hold the machine's start and a rerun.
# Prepare here first: `scripts/device_wheels.sh` (fills the gitignored .device-carry/); then call the
# device tool with   run(command="bash scripts/device_check.sh", carry=[".device-carry"], timeout_s=600)
#
# On the machine it: records the GPU and Python; installs the carried wheels into /tmp/site (no
# index; the machine reaches nothing); runs the CUDA tests (`pytest -m gpu`, at most PYTEST_SECONDS,
# default 150); then `python3 benchmarks/gpu.py ARGS` (ARGS: this script's arguments, e.g. --quick
# or --no-serve) in the time left of BUDGET_SECONDS (default 570). Everything goes under $OUT (5
# files: summary.txt, machine.txt, install.log, pytest_gpu.log, gpu_bench.log); the output ends with
# the test summary and the benchmark's table and last line.
set -uo pipefail
cd "$(dirname "$0")/.."
start=$(date +%s)
OUT=${OUT:-$PWD/.device-out}
CARRY=${DEVICE_CARRY:-$PWD/.device-carry}
PY=${PYTHON:-python3}
BUDGET=${BUDGET_SECONDS:-570}
mkdir -p "$OUT"
say() { echo "device_check: $*" | tee -a "$OUT/summary.txt"; }
elapsed() { echo $(($(date +%s) - start)); }

{ nvidia-smi || true; "$PY" -VV; "$PY" -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda,
'available', torch.cuda.is_available()); print(torch.cuda.get_device_name(0) if torch.cuda.is_available() else '')"
  nproc; free -g; } > "$OUT/machine.txt" 2>&1
say "$(grep -m1 -E 'NVIDIA|torch' "$OUT/machine.txt"); $("$PY" -V 2>&1)"

[ -d "$CARRY/wheels" ] || { say "error: $CARRY/wheels is missing: run scripts/device_wheels.sh here and carry .device-carry"; exit 2; }
want=$(cat "$CARRY/wheels/PYTHON" 2>/dev/null || echo "?")
have=$("$PY" -c 'import sys; print(f"{sys.version_info[0]}.{sys.version_info[1]}")')
[ "$want" = "$have" ] || say "warning: the wheels are for Python $want, this machine has $have (DEVICE_PYTHON=$have scripts/device_wheels.sh)"
if [ -n "${SKIP_INSTALL:-}" ]; then  # a dry run on a machine that has the packages
  echo "SKIP_INSTALL set: no wheels installed" > "$OUT/install.log"
elif ! "$PY" -m pip install --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site \
    "$CARRY"/wheels/*.whl > "$OUT/install.log" 2>&1; then
  say "error: installing the carried wheels failed:"; tail -20 "$OUT/install.log"; exit 3
fi
export PYTHONPATH=/tmp/site:$PWD/src${PYTHONPATH:+:$PYTHONPATH} HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false PYTHONUNBUFFERED=1
export OPENFT_TEST_MODEL_CACHE=$CARRY/models OPENFT_MODEL_CACHE_DIR=$CARRY/models OPENFT_BENCH_DATA=$CARRY/data
export OPENFT_BENCH_MODELS=${OPENFT_BENCH_MODELS:-/tmp/openft-bench-models}  # the 1.7B shape: 3.4 GB, never carried
"$PY" -c "import openft, torch, transformers, peft, trl, fastapi, openai, sqlalchemy
print('openft from', openft.__file__, '| transformers', transformers.__version__, '| peft', peft.__version__,
      '| trl', trl.__version__)" 2>&1 | tee -a "$OUT/summary.txt" || { say "error: imports failed"; exit 4; }
say "ready after $(elapsed) s"

# 1. the CUDA tests; a module whose imports fail here (a test-only package) does not stop the others
timeout -k 10 "${PYTEST_SECONDS:-150}" "$PY" -m pytest -m gpu -q -p no:cacheprovider --timeout 120 \
  --continue-on-collection-errors tests > "$OUT/pytest_gpu.log" 2>&1
rc=$?
say "pytest -m gpu: exit $rc after $(elapsed) s: $(tail -1 "$OUT/pytest_gpu.log")"
grep -E "^(FAILED|ERROR)" "$OUT/pytest_gpu.log" | head -30

# 2. the benchmark, in the time left
left=$((BUDGET - $(elapsed)))
say "benchmarks/gpu.py $* (at most $left s)"
timeout -k 10 "$left" "$PY" benchmarks/gpu.py "$@" > "$OUT/gpu_bench.log" 2>&1
rc=$?
say "benchmarks/gpu.py: exit $rc after $(elapsed) s"
grep -vE "Warning|warnings.warn|it/s\]|s/it\]" "$OUT/gpu_bench.log" | tail -45
exit $rc
