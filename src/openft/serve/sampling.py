"""Choosing the next token of each row, and the logprobs OpenAI reports.

Each sequence has its own `torch.Generator`, so a seeded request draws the same numbers whatever
else shares its batch. Temperature 0 is greedy. top_p keeps the smallest set of tokens whose
probability reaches p. Reported logprobs are those of the model's distribution (log-softmax of
the raw logits), as OpenAI and vLLM report them.

Knows nothing about models, batching or HTTP.
"""

from __future__ import annotations

import torch


def make_generator(seed: int | None, index: int) -> torch.Generator:
    g = torch.Generator()
    if seed is None:
        g.seed()
    else:
        g.manual_seed((int(seed) * 1_000_003 + index) & 0xFFFF_FFFF_FFFF)
    return g


def sample_row(logits: torch.Tensor, temperature: float, top_p: float, generator: torch.Generator) -> int:
    """logits: [vocab] float32 on CPU."""
    if temperature <= 0:
        return int(torch.argmax(logits))
    probs = torch.softmax(logits / temperature, dim=-1)
    if top_p < 1.0:
        sorted_p, order = torch.sort(probs, descending=True)
        cum = torch.cumsum(sorted_p, dim=-1)
        keep = (cum - sorted_p) < top_p            # always keeps the first token
        sorted_p = torch.where(keep, sorted_p, torch.zeros_like(sorted_p))
        choice = torch.multinomial(sorted_p, 1, generator=generator)
        return int(order[choice])
    return int(torch.multinomial(probs, 1, generator=generator))


def token_logprob(logits: torch.Tensor, token: int, top: int, token_bytes) -> dict:
    """One entry of OpenAI's chat `logprobs.content`: token, logprob, bytes, top_logprobs."""
    lp = torch.log_softmax(logits, dim=-1)
    text, raw = token_bytes(token)
    entry = {"token": text, "logprob": float(lp[token]), "bytes": raw, "top_logprobs": []}
    if top > 0:
        vals, idx = torch.topk(lp, min(top, lp.shape[-1]))
        for v, i in zip(vals.tolist(), idx.tolist()):
            t, b = token_bytes(i)
            entry["top_logprobs"].append({"token": t, "logprob": v, "bytes": b})
    return entry
