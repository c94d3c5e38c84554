#!/usr/bin/env bash
# Installs openft with its test dependencies into .venv (CPU torch first, pinned), lints (ruff), then
# runs the whole test suite offline except GPU tests (about 16 minutes on 2 cores). Extra arguments go to
# pytest instead, e.g. `scripts/test.sh -m "not slow"` (the fast loop) or `-k files`.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/install.sh dev
# llama.cpp for the GGUF export's consumer tests: node-llama-cpp's prebuilt CPU binaries from npm (about 10 s,
# nothing compiled; scripts/llama_cpp.sh). Set OPENFT_SKIP_LLAMA=1 to skip it (its tests then skip, in CI too).
if [ -z "${OPENFT_SKIP_LLAMA:-}" ] && ! bash scripts/llama_cpp.sh; then
  if [ "${CI:-}" = true ]; then echo "error: could not install llama.cpp for the GGUF consumer tests" >&2; exit 1; fi
  echo "warning: llama.cpp not installed; the GGUF consumer tests will be skipped" >&2
fi
# PostgreSQL: the job-queue tests also run against a real server when one can be started here
# (root, Debian's postgresql package); in CI that is required.
if [ -z "${OPENFT_TEST_POSTGRES_URL:-}" ] && [ "$(id -u)" = 0 ]; then
  if url=$(bash scripts/postgres.sh); then export OPENFT_TEST_POSTGRES_URL="$url"; trap "bash scripts/postgres.sh stop" EXIT
  elif [ "${CI:-}" = true ]; then echo "error: could not start PostgreSQL for the tests" >&2; exit 1
  else echo "warning: PostgreSQL not started; testing SQLite only" >&2; fi
fi
# The dashboard's browser tests drive Debian's Chromium (never a downloaded browser build).
if ! command -v chromium >/dev/null && [ "$(id -u)" = 0 ]; then
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) >&2 \
    || echo "warning: could not install chromium; the browser tests will be skipped" >&2
fi
# The docs site (mkdocs.yml, strict): a broken link or a page missing from its nav fails here (no --quiet: it hides them).
site=$(mktemp -d); python -m mkdocs build --strict --site-dir "$site"; rm -rf "$site"
if [ "$#" -eq 0 ]; then set -- -m "not gpu"; fi
# Lint first: a violation fails the run before any test starts ([tool.ruff] in pyproject.toml).
python -m ruff check .
python -m pytest "$@"
