"""Packed-row attention paths side by side: forward+backward of one packed row through openft's
trainer (build_model + micro_batch_loss, LoRA r=16 on all linear layers) with each attention path.

The model has smollm2-135m's shape (hidden 576, 30 layers, 9 heads, 3 KV heads, vocabulary
49,152) with random weights (speed does not depend on the values); the row holds examples of 265
to 639 tokens (the issue-14 workload's range) up to `--tokens`. Paths (OPENFT_ATTENTION):
`packed` (per-example SDPA, the CPU default), `flex` (FlexAttention with a document mask; on CPU
eager, since torch compiles no FlexAttention backward there), `varlen` (on CUDA: flash-attn,
torch varlen_attn or FlexAttention; on CPU it is FlexAttention too), `sdpa` (transformers' stock
masked SDPA over the whole row). Each path: one warm-up round, then `--repeats` timed rounds, the paths interleaved in each round;
printed: the whole step, and the attention calls alone (30 layers of the row's q/k/v); minimum
and median.

    HF_HUB_OFFLINE=1 python benchmarks/varlen_attention.py                  # 4096 tokens, 3 repeats
    HF_HUB_OFFLINE=1 python benchmarks/varlen_attention.py --quick          # 1024 tokens, 1 repeat
    HF_HUB_OFFLINE=1 python benchmarks/varlen_attention.py --paths varlen,packed --device cuda

Last line: `varlen_attention tokens=<n> <path>_s=<seconds per step> ...`.
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))


def random_model(out: Path) -> str:
    from transformers import LlamaConfig, LlamaForCausalLM

    cfg = LlamaConfig(hidden_size=576, intermediate_size=1536, num_hidden_layers=30, num_attention_heads=9,
                      num_key_value_heads=3, vocab_size=49152, max_position_embeddings=8192, tie_word_embeddings=True,
                      rope_theta=100000.0)
    torch.manual_seed(0)
    LlamaForCausalLM(cfg).to(torch.bfloat16).save_pretrained(out)
    return str(out)


def row(tokens: int, seed: int = 0):
    from openft.data.encode import Encoded
    from openft.train.data import pack

    rng, exs, used = random.Random(seed), [], 0
    while used < tokens:
        n = min(rng.randint(265, 639), tokens - used)
        ids = [rng.randrange(49152) for _ in range(n)]
        exs.append(Encoded(ids, [0] * (n // 2) + [1] * (n - n // 2)))
        used += n
    (mb,) = pack(exs, tokens)
    return mb, len(exs)


def attention_only(path: str, mb, device, layers: int = 30) -> float:
    """Seconds for `layers` attention calls (forward+backward) of the row, q (1, 9, T, 64), k/v (1, 3, T, 64)."""
    from openft.train import attention as A

    fn = {"packed": A.packed_sdpa, "flex": A.flex_attention_fn, "varlen": A.varlen_attention}[path]
    g = torch.Generator().manual_seed(0)
    t_ = mb.n_tokens
    dt = torch.bfloat16 if device.type == "cuda" else torch.float32
    q, k, v = (torch.randn(1, h, t_, 64, generator=g).to(device, dt).requires_grad_() for h in (9, 3, 3))
    extra = A.row_kwargs(_Impl(path), mb) if path != "packed" else {}
    _sync(device)
    t = time.perf_counter()
    for _ in range(layers):
        out, _ = fn(torch.nn.Module(), q, k, v, None, scaling=0.125, position_ids=mb.position_ids, **extra)
        out.sum().backward()
    _sync(device)
    return time.perf_counter() - t


class _Impl:  # what row_kwargs reads of a model: its config's attn_implementation
    def __init__(self, path):
        from openft.train.attention import CHOICES

        self.config = type("C", (), {"_attn_implementation": CHOICES[path]})()


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def step(model, mb, precision, device) -> float:
    from openft.train.model import micro_batch_loss

    model.zero_grad(set_to_none=True)
    _sync(device)
    t = time.perf_counter()
    loss, _, _ = micro_batch_loss(model, mb, precision)
    loss.backward()
    _sync(device)
    return time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--tokens", type=int, default=4096)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--paths", default="packed,flex")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--layers", type=int, default=30, help="attention calls in the attention-only timing")
    ap.add_argument("--attention-only", action="store_true", help="skip the whole-model steps")
    ap.add_argument("--quick", action="store_true", help="1024 tokens, one timed step")
    a = ap.parse_args()
    if a.quick:
        a.tokens, a.repeats = 1024, 1
    from machine import cpu_line

    from openft.train.model import pick_device, pick_precision

    device = pick_device(a.device)
    precision = pick_precision("auto", device)
    mb, n_ex = row(a.tokens)
    print(f"{cpu_line()}; torch {torch.__version__}; {device}; {precision}; threads {torch.get_num_threads()}")
    print(f"row: {mb.n_tokens} tokens, {n_ex} examples; forward+backward, LoRA r=16, smollm2-135m shape")
    from openft.train.model import build_model

    paths = a.paths.split(",")
    mb = mb.to(device)
    att = {p: [] for p in paths if p != "sdpa"}
    steps = {p: [] for p in paths}
    for i in range(a.repeats + 1):  # paths interleaved, so that a busy machine slows them alike
        for p in att:
            t = attention_only(p, mb, device, a.layers) * 30 / a.layers
            if i:
                att[p].append(t)
    if a.attention_only:
        paths = []
    base = None
    with tempfile.TemporaryDirectory() as tmp:
        models = {}
        for p in paths:
            base = base or random_model(Path(tmp) / "model")
            os.environ["OPENFT_ATTENTION"] = p
            models[p] = build_model(base, method="lora", precision=precision, device=device)
        for i in range(a.repeats + 1):  # the first round warms up (and compiles, on CUDA)
            for p in paths:
                t = step(models[p], mb, precision, device)
                if i:
                    steps[p].append(t)
    fmt = lambda ts: f"min {min(ts):7.2f} s, median {statistics.median(ts):7.2f} s"  # noqa: E731
    for p in att:
        print(f"{p:8s} attention only (30 layers, fwd+bwd): {fmt(att[p])}")
    for p in paths:
        print(f"{p:8s} step (fwd+bwd): {fmt(steps[p])}")
    print(f"varlen_attention tokens={mb.n_tokens} " + " ".join(f"{p}_step_s={min(steps[p]):.3f}" for p in paths)
          + "".join(f" {p}_attn_s={min(att[p]):.3f}" for p in att))


if __name__ == "__main__":
    main()
