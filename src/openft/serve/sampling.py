"""Choosing the next token of every row of a batch on the logits' device, and the logprobs OpenAI reports.

`sample_batch` works on the whole [rows, vocab] logits tensor where it lies (GPU or CPU): greedy
rows take the argmax; sampled rows take a softmax at their temperature, keep (top_p < 1) the
smallest set of most likely tokens whose probability reaches p, and pick by inverse CDF with one
uniform number per row. Each sequence draws its uniforms from its own `make_generator` stream
(seed and choice index), so a seeded request picks the same tokens whatever else shares its
batch, and only the chosen ids cross to the host (one copy per step, see `Picked`).

Reported logprobs are those of the model's distribution (log-softmax of the raw logits, before
temperature, top_p or a grammar's mask), as OpenAI and vLLM report them; `Picked` computes them
on the device for the rows that asked and carries them home in the same copy as the ids.

Knows nothing about models, batching or HTTP.
"""

from __future__ import annotations

import random

import torch


def make_generator(seed: int | None, index: int) -> random.Random:
    """One sequence's stream of uniforms: seeded requests repeat, unseeded ones draw from the OS."""
    if seed is None:
        return random.Random()
    return random.Random((int(seed) * 1_000_003 + index) & 0xFFFF_FFFF_FFFF)


def sample_batch(logits: torch.Tensor, temperature: list[float], top_p: list[float],
                 uniform: list[float | None]) -> torch.Tensor:
    """logits [B, vocab] float32 (any device); per row its temperature (0 = greedy), top_p and a
    uniform number in [0, 1) (None for greedy rows). Returns the chosen ids, [B] int64 on the
    logits' device. The work on the vocabulary is batched; the host touches only these lists."""
    greedy = logits.argmax(dim=-1)
    rows = [i for i, t in enumerate(temperature) if t > 0]
    if not rows:
        return greedy
    dev = logits.device
    host = torch.tensor([[float(temperature[i]), float(top_p[i]), float(uniform[i])] for i in rows],
                        dtype=torch.float32)
    par = host.to(dev, non_blocking=True)
    idx = torch.tensor(rows, device=dev) if len(rows) < len(temperature) else None
    sub = logits if idx is None else logits.index_select(0, idx)
    probs = torch.softmax(sub / par[:, 0:1], dim=-1)
    vocab = probs.shape[-1]
    if any(top_p[i] < 1.0 for i in rows):
        probs, order = _descending(probs, par[:, 1:2])
        cum = probs.cumsum(dim=-1)
        probs = probs.masked_fill((cum - probs) >= par[:, 1:2], 0.0)   # always keeps the first token
    else:
        order = None
    cdf = probs.cumsum(dim=-1)
    target = par[:, 2:3] * cdf[:, -1:]
    pick = torch.searchsorted(cdf, target, right=True).clamp_(max=vocab - 1)   # first cdf > u * total
    # u * total rounding up onto the total would pick a zero-probability tail token: take the mode then
    mode = torch.zeros_like(pick) if order is not None else sub.argmax(dim=-1, keepdim=True)
    pick = torch.where(probs.gather(1, pick) > 0, pick, mode)
    chosen = (order.gather(1, pick) if order is not None else pick)[:, 0]
    if idx is None:
        return chosen
    return greedy.index_copy(0, idx, chosen)


def _descending(probs: torch.Tensor, top_p: torch.Tensor, first: int = 256) -> tuple[torch.Tensor, torch.Tensor]:
    """probs sorted descending with their token ids, as far as top_p needs: the first `first` when
    they reach every row's top_p (the usual case: a sort of the whole vocabulary costs ~15 ms a row on
    CPU), else the whole vocabulary. On CPU only: the check reads a flag on the host, which on a GPU
    would be a second synchronisation per step, for a sort the GPU does in microseconds."""
    if probs.device.type == "cpu" and probs.shape[-1] > 4 * first:
        vals, order = probs.topk(first, dim=-1)
        if bool((vals.sum(dim=-1, keepdim=True) >= top_p).all()):
            return vals, order
    return torch.sort(probs, dim=-1, descending=True)


class Picked:
    """The step's chosen ids, and the logprobs of the rows that asked, brought to the host at once.

    `logprob_rows`: {row: top_logprobs} of the rows that report logprobs; their log-softmax is taken
    from `raw` (the model's logits before any grammar mask: pass them before masking, see `lp_of`)."""

    def __init__(self, chosen: torch.Tensor, lp: torch.Tensor | None, logprob_rows: dict[int, int]):
        B = chosen.shape[0]
        self.rows = list(logprob_rows)
        self.top = max(logprob_rows.values(), default=0)
        if lp is None or not self.rows:
            self.ids = [int(t) for t in chosen.tolist()]   # the one device -> host copy of the step
            self._lp = []
            return
        sel = chosen.index_select(0, torch.tensor(self.rows, device=chosen.device))[:, None]
        parts = [chosen.double(), lp.gather(1, sel).double().flatten()]
        if self.top:
            vals, ids = lp.topk(min(self.top, lp.shape[-1]), dim=-1)
            parts += [vals.double().flatten(), ids.double().flatten()]
        flat = torch.cat(parts).tolist()               # one copy: ids, chosen logprobs, top-k values and ids
        self.ids = [int(t) for t in flat[:B]]
        n, k = len(self.rows), min(self.top, lp.shape[-1])
        chosen_lp = flat[B:B + n]
        vals = flat[B + n:B + n + n * k]
        tops = flat[B + n + n * k:]
        self._lp = [(chosen_lp[j], vals[j * k:(j + 1) * k], [int(t) for t in tops[j * k:(j + 1) * k]])
                    for j in range(n)]
        self._where = {r: j for j, r in enumerate(self.rows)}

    @staticmethod
    def lp_of(raw: torch.Tensor, logprob_rows: dict[int, int]) -> torch.Tensor | None:
        """Log-softmax of the rows that report logprobs, [n, vocab] (None when no row asks)."""
        if not logprob_rows:
            return None
        idx = torch.tensor(list(logprob_rows), device=raw.device)
        return torch.log_softmax(raw.index_select(0, idx).float(), dim=-1)

    def entry(self, row: int, top: int, token_bytes) -> dict:
        chosen_lp, vals, ids = self._lp[self._where[row]]
        return logprob_entry(self.ids[row], chosen_lp, vals[:top], ids[:top], token_bytes)


def logprob_entry(token: int, logprob: float, top_vals: list[float], top_ids: list[int], token_bytes) -> dict:
    """One entry of OpenAI's chat `logprobs.content`: token, logprob, bytes, top_logprobs."""
    text, raw = token_bytes(token)
    entry = {"token": text, "logprob": float(logprob), "bytes": raw, "top_logprobs": []}
    for v, i in zip(top_vals, top_ids):
        t, b = token_bytes(int(i))
        entry["top_logprobs"].append({"token": t, "logprob": float(v), "bytes": b})
    return entry


def token_logprob(logits: torch.Tensor, token: int, top: int, token_bytes) -> dict:
    """`logprob_entry` of `token` from one row of logits [vocab] (the echoed prompt's logprobs)."""
    lp = torch.log_softmax(logits.float(), dim=-1)
    vals, idx = torch.topk(lp, min(top, lp.shape[-1])) if top > 0 else (lp[:0], lp[:0].long())
    return logprob_entry(token, float(lp[token]), vals.tolist(), idx.tolist(), token_bytes)
