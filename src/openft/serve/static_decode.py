"""The decode step in fixed shapes: what a CUDA graph can capture once and replay every step.

A step where every running sequence decodes (one token each; no prompt joins) is the common step
of a busy server. `StaticDecoder.step` runs it with inputs of fixed shape: the rows padded to a
bucket (1, 2, 4, 8, ... `bucket_rows`), the keys read up to a bucketed length (256, 512, ...
`bucket_len`), token ids and positions in one device buffer per row bucket (one host->device copy
per step), the LoRA row mask a buffer rewritten in place when the batch's composition changes
(`LoraBatch.static_rows`), and the attention mask computed on the device from the positions.
Nothing in the step reads a device value back on the host, so on CUDA the whole forward (embedding
to logits) is captured once per (rows, length, adapter set) and replayed (cuda_graphs.py); on CPU
and where capture is off the same function runs eagerly and gives the same tokens.

Padding rows (ids 0 at position 0) use the free cache slots after the batch's own (the runner keeps
running sequences in slots 0..n-1, and a prompt later written into such a slot overwrites it).

Knows the runner's cache layout and `layers`; nothing about sampling, scheduling or HTTP.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

LEN_MIN = 256   # shortest key bucket: short chats share one graph per row bucket


def bucket_rows(n: int) -> int:
    return 1 << max(0, n - 1).bit_length()


def bucket_len(n: int, cap: int) -> int:
    return min(max(LEN_MIN, 1 << max(0, n - 1).bit_length()), cap)


class StaticDecoder:
    def __init__(self, runner, *, graphs: bool):
        from openft.serve.cuda_graphs import DecodeGraphs

        self.r = runner
        self.graphs = DecodeGraphs() if graphs else None
        self._inputs: dict[int, torch.Tensor] = {}     # rows bucket -> [2, rows] int64: token ids; positions
        self._rows: dict[int, torch.Tensor] = {}       # rows bucket -> arange(rows): each row's cache slot
        self._keys: dict[int, torch.Tensor] = {}       # length bucket -> arange(length)
        self.steps = 0                                 # steps run here (stats)

    def reset(self) -> None:
        """The runner's cache was replaced: graphs that read the old one are dropped."""
        if self.graphs is not None:
            self.graphs.clear()

    def step(self) -> torch.Tensor:
        """One decode step of all the runner's sequences; logits [n, vocab] float32 on the device
        (on CUDA with graphs: a view of the graph's output, valid until the next step)."""
        r = self.r
        seqs, dev = r.seqs, r.device
        n = len(seqs)
        B = bucket_rows(n)
        pos = [s.pos for s in seqs]
        need = max(pos) + 1
        r._ensure_cache(B, need)
        L = bucket_len(need, r.cache.shape[4])
        host = torch.tensor([[s.feed[0] for s in seqs] + [0] * (B - n), pos + [0] * (B - n)])
        buf = self._inputs.get(B)
        if buf is None:
            buf = self._inputs[B] = torch.zeros(2, B, dtype=torch.long, device=dev)
            self._rows[B] = torch.arange(B, device=dev)
        if L not in self._keys:
            self._keys[L] = torch.arange(L, device=dev)
        buf.copy_(host)                                # the step's one host -> device copy
        combo, n_adapters, keep = r.lora.static_rows([s.adapter for s in seqs] + [None] * (B - n), dev, r.dtype)
        r.steps += 1
        self.steps += 1
        r.peak_rows = max(r.peak_rows, n)
        r.peak_adapters = max(r.peak_adapters, n_adapters)
        try:
            if self.graphs is not None:
                logits = self.graphs.run((B, L, combo, id(keep)), lambda: self.forward(B, L), keep)
            else:
                logits = self.forward(B, L)
        finally:
            r.lora.clear()
        for s in seqs:
            s.pos += 1
            s.feed = []
        return logits[:n]

    def forward(self, B: int, L: int) -> torch.Tensor:
        """The fixed-shape step over the inputs buffer of bucket B, keys 0..L-1: logits [B, vocab].
        Only device tensors of fixed address and shape are read (graph-safe: no host sync)."""
        r = self.r
        buf, rows, keys, cache = self._inputs[B], self._rows[B], self._keys[L], r.cache
        ids, pos = buf[0], buf[1]
        inner = r.model.model
        x = inner.embed_tokens(ids)                                      # [B, hidden]
        cos, sin = inner.rotary_emb(x, pos[None])
        cos, sin = cos[0][:, None, :], sin[0][:, None, :]
        mask = (keys[None, :] <= pos[:, None])[:, None, None, :]         # [B, 1, 1, L]

        def attend(li: int, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
            kc, vc = cache[li, 0], cache[li, 1]                          # [slots, KV, len, D]
            kc[rows, :, pos] = k
            vc[rows, :, pos] = v
            o = F.scaled_dot_product_attention(q[:, :, None, :], kc[:B, :, :L], vc[:B, :, :L], attn_mask=mask,
                                               enable_gqa=True)
            return o[:, :, 0, :]

        x = r.layers(x, cos, sin, attend)
        return r.model.lm_head(inner.norm(x)).float()
