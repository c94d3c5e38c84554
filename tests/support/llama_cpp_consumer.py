"""llama.cpp as the GGUF export's consumer, run in a child process: `node llama_cpp/consumer.mjs`.

llama.cpp is native code: a crash in it (a segfault in a CPU kernel, an abort on a failed assertion) ends
the process it runs in. Run inside pytest, that ended the whole suite; here it ends the child, and the
test that asked fails with the signal's name. The consumer is node-llama-cpp's prebuilt CPU build of
llama.cpp (tests/support/llama_cpp/package.json), which scripts/llama_cpp.sh installs with npm.

Knows nothing of openft's engine: it hands llama.cpp a GGUF file and prompts, and returns what llama.cpp
made of them (token ids, greedy tokens, raw logits). The comparison is the test's.
"""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

HERE = Path(__file__).parent / "llama_cpp"
SCRIPT = HERE / "consumer.mjs"
TIMEOUT_S = 600   # one GGUF file of the default model, 8 prompts: about 30 s on a busy 2-core machine


@dataclass
class Answer:
    tokens: list[int]       # llama.cpp's tokens for the prompt's text (special tokens parsed, no BOS added)
    generated: list[int]    # its greedy tokens, the stop token left out
    logits: np.ndarray      # [len(generated) (+1 when it stopped), n_vocab] float32: the row that chose each


def missing() -> str | None:
    """Why the consumer cannot run here, or None when it can."""
    if shutil.which("node") is None:
        return "Node.js is not installed (scripts/llama_cpp.sh installs it with llama.cpp)"
    if not (HERE / "node_modules" / "node-llama-cpp").is_dir():
        return "llama.cpp (node-llama-cpp) is not installed: bash scripts/llama_cpp.sh"
    return None


def run(gguf: Path, prompts: list[tuple[str, list[int]]], stop_ids: set[int], n_new: int,
        threads: int = 1, n_ctx: int = 256, fault: str | None = None) -> list[Answer]:
    """Per prompt (its rendered text, the ids to feed): llama.cpp's answer from `gguf`. A crash, an error
    or a hang of llama.cpp fails the calling test with what happened and the end of its stderr.
    `fault="segfault"` makes the child kill itself with SIGSEGV once the model is loaded (the fault point
    for the test of this very reporting). One thread: llama.cpp's threads wait for each other at every
    op, and on 2 cores shared with other work 16 tokens of SmolLM2-135M took 8.9 s with 2 threads and
    0.8 s with 1 (measured with the suite's neighbours running)."""
    with tempfile.TemporaryDirectory(prefix="llama-cpp-") as tmp:
        out = Path(tmp)
        request = {"gguf": str(gguf), "threads": threads, "n_ctx": n_ctx, "n_new": n_new,
                   "stop_ids": sorted(stop_ids), "prompts": [{"text": t, "ids": ids} for t, ids in prompts],
                   "fault": fault}
        (out / "request.json").write_text(json.dumps(request))
        cmd = ["node", str(SCRIPT), str(out / "request.json"), str(out)]
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=TIMEOUT_S)
        except subprocess.TimeoutExpired as e:
            pytest.fail(f"llama.cpp did not finish reading {gguf.name} in {TIMEOUT_S} s; its stderr ends:\n"
                        f"{_tail(e.stderr)}", pytrace=False)
        if proc.returncode < 0:
            sig = signal.Signals(-proc.returncode)
            pytest.fail(f"llama.cpp crashed reading {gguf.name}: killed by signal {sig.name} "
                        f"({signal.strsignal(sig)}); its stderr ends:\n{_tail(proc.stderr)}", pytrace=False)
        if proc.returncode != 0:
            pytest.fail(f"llama.cpp failed reading {gguf.name} (exit status {proc.returncode}); its stderr "
                        f"ends:\n{_tail(proc.stderr)}", pytrace=False)
        result = json.loads((out / "result.json").read_text())
        n_vocab = result["n_vocab"]
        return [Answer(p["tokens"], p["generated"],
                       np.fromfile(out / f"logits-{i}.f32", dtype=np.float32).reshape(-1, n_vocab))
                for i, p in enumerate(result["prompts"])]


def _tail(text: str | bytes | None, n: int = 2000) -> str:
    if isinstance(text, bytes):
        text = text.decode(errors="replace")
    return (text or "(nothing)")[-n:]
