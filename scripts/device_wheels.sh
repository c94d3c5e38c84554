#!/usr/bin/env bash
# Prepares .device-carry/ (gitignored) for scripts/device_check.sh on a lent GPU machine, which has
# torch, transformers, peft, accelerate, numpy, pyarrow, httpx, typer, rich, psutil and pytest but no
# PyPI (nothing outside it can be reached) and none of the packages below:
#   .device-carry/wheels/  the missing packages as wheels (pip download --no-deps), at the versions this
#                          checkout's environment runs, for the device's Python (DEVICE_PYTHON, default
#                          3.12: /opt/torch/.venv/bin/python3 there; see ../.library/device/KINDS.md);
#                          wheels/PYTHON records it, and device_check.sh compares it with the device's
#   .device-carry/data/    ../shared/data's AR-LSAT and ConjNLI examples (../shared does not travel)
#   .device-carry/models/  openft-tiny from the model cache (the GPU tests' model and SmolLM2's
#                          tokenizer for benchmarks/gpu.py; the device cannot build it without the GGUF)
# and prints each file's size and the total: the carried folder and the working tree must fit 64 MiB.
#
#   . .venv/bin/activate; scripts/device_wheels.sh
# then, with the device tool: run(command="bash scripts/device_check.sh", carry=[".device-carry"], timeout_s=600)
set -euo pipefail
cd "$(dirname "$0")/.."
PY_VER=${DEVICE_PYTHON:-3.12}
DEST=.device-carry
PYTHON=${PYTHON:-python}
# transformers: the device has 5.17; the trainer and engine are tested here on this checkout's version
PACKAGES="pydantic pydantic-core pydantic-settings annotated-types typing-inspection typing-extensions python-dotenv
fastapi starlette uvicorn python-multipart sqlalchemy openai httpx2 httpcore2 truststore jiter sniffio
opentelemetry-api tzdata trl datasets dill multiprocess peft transformers"

pins=$("$PYTHON" - $PACKAGES <<'EOF'
import sys
from importlib.metadata import PackageNotFoundError, version

missing = []
for name in sys.argv[1:]:
    try:
        print(f"{name}=={version(name)}")
    except PackageNotFoundError:
        missing.append(name)
if missing:
    sys.exit(f"not installed in this environment: {' '.join(missing)} (activate the project's .venv)")
EOF
)
rm -rf "$DEST"  # afresh: nothing else may travel in it
mkdir -p "$DEST/wheels" "$DEST/data" "$DEST/models"
# shellcheck disable=SC2086
"$PYTHON" -m pip download -q --no-deps --only-binary=:all: --python-version "$PY_VER" --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
  --platform manylinux2014_x86_64 --platform manylinux1_x86_64 -d "$DEST/wheels" $pins
echo "$PY_VER" > "$DEST/wheels/PYTHON"

for name in ar_lsat conjnli; do
  mkdir -p "$DEST/data/$name"
  cp ../shared/data/$name/examples.jsonl "$DEST/data/$name/"
done
tiny=$("$PYTHON" -c "from openft.config import Settings; from openft.models import materialize
print(materialize(Settings(model_cache_dir='${OPENFT_TEST_MODEL_CACHE:-.cache/test-models}'), 'openft-tiny'))")
cp -r "$tiny" "$DEST/models/openft-tiny"

echo "wheels for Python $PY_VER:"
(cd "$DEST/wheels" && ls -l *.whl | awk '{printf "  %8.1f KiB  %s\n", $5 / 1024, $9}')
mib() { awk -v b="$1" 'BEGIN { printf "%.1f", b / 1048576 }'; }
tree=$(git ls-files -z | xargs -0 du -cb 2>/dev/null | tail -1 | cut -f1)
wheels=$(du -cb "$DEST"/wheels/*.whl | tail -1 | cut -f1)
carry=$(du -sb "$DEST" | cut -f1)
total=$((carry + tree))
echo "wheels $(mib "$wheels") MiB; $DEST $(mib "$carry") MiB (wheels, data, openft-tiny); tracked tree $(mib "$tree") MiB"
echo "total that travels: about $(mib "$total") MiB of the 64 MiB limit (untracked files that are not ignored add to it)"
[ "$total" -lt $((64 * 1048576)) ] || { echo "error: over the 64 MiB limit" >&2; exit 1; }
