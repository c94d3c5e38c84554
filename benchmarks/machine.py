"""What every benchmark prints next to its figures: the CPU's model, the vector flags that decide
openft's precision and speed (AVX2/FMA, AVX-512, bf16, AMX), and the number of CPUs."""

from __future__ import annotations

import os
import platform
from pathlib import Path

FLAGS = ("avx2", "fma", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile")


def cpu_line() -> str:
    model, flags = platform.processor() or platform.machine() or "?", set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
            elif line.startswith("flags"):
                flags = set(line.split(":", 1)[1].split())
                break
    except OSError:
        pass
    return f"{model}; flags {' '.join(f for f in FLAGS if f in flags) or '-'}; {os.cpu_count()} cpus"
