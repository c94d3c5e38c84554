#!/usr/bin/env bash
# The main job: installs openft into .venv (CPU torch first, pinned) and runs the end-to-end demo
# (examples/quickstart.py): serve, upload, fine-tune smollm2-135m-instruct, compare base vs tuned.
# Extra arguments go to the demo, e.g. `scripts/quickstart.sh --n-epochs 2`.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/install.sh
exec python examples/quickstart.py "$@"
