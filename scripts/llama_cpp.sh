#!/usr/bin/env bash
# Installs the GGUF export's consumer for tests/serve/test_gguf_consumers.py: llama.cpp as node-llama-cpp's
# prebuilt CPU binaries (npm, pinned in tests/support/llama_cpp/package-lock.json; about 10 s, nothing is
# compiled) into tests/support/llama_cpp/node_modules. Needs Node.js 20 or later; as root it apt-installs
# Debian's nodejs when none is on the PATH.
#
# The binaries hold one libggml-cpu variant per x86-64 level (sse42 ... haswell, zen4, icelake, ...), and
# llama.cpp loads the best one this CPU runs, so one install works on AVX2-only and AVX-512 machines alike.
# The Sapphire Rapids variant is removed: it is the only one with AMX code, and llama.cpp's AMX matmul
# segfaults on the first decode on AMX Xeons (ggml-org/llama.cpp#20824; Ollama and DSPy drop that variant
# too). AMX CPUs then load the best AVX-512 variant (cooperlake: AVX-512 bf16 and VNNI).
set -euo pipefail
cd "$(dirname "$0")/../tests/support/llama_cpp"
if ! command -v node >/dev/null && [ "$(id -u)" = 0 ]; then
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nodejs npm >/dev/null) >&2
fi
if ! node -e 'process.exit(Number(process.versions.node.split(".")[0]) >= 20 ? 0 : 1)'; then
  echo "error: node-llama-cpp needs Node.js 20 or later (found $(node --version))" >&2; exit 1
fi
# The lock pins every package; `npm ci` would refuse it, as node-llama-cpp 3.22.1's macOS and Windows binary
# packages were never published, so `install --no-save` (which leaves the lock as it is). --omit=optional: not
# node-llama-cpp's CUDA and Vulkan builds; the CPU one is a direct dependency here. --ignore-scripts: its
# postinstall would offer to build llama.cpp from source.
npm install --no-save --omit=optional --ignore-scripts --no-audit --no-fund --loglevel=error
rm -f node_modules/@node-llama-cpp/linux-x64/bins/linux-x64/libggml-cpu-sapphirerapids.so
