"""Varlen attention for packed rows on CPU: one causal SDPA call per example.

A packed row holds several examples, each with `position_ids` restarting at 0. The stock
path builds a (T, T) block-diagonal mask and runs masked SDPA over the whole row, doing
T^2 work where sum(len_i^2) is needed, through the slower masked kernel. Here the row is
cut at the restarts and each example runs `is_causal=True` SDPA on its own slice, the CPU
analogue of flash-attention's varlen kernel. A position that jumps back to k > 0 starts a
fork (DPO's shared prompt, openft.train.dpo): the tokens from there on attend to the first k
tokens of their example and to themselves, not to the branch before them; such an example
runs one SDPA call with that (L, L) mask. Registered with transformers' attention and
mask interfaces under PACKED (lazily, by `register()`), so any model whose attention
forwards `position_ids` (Llama, Mistral, Qwen, Gemma, SmolLM...) can use it; without
position ids it raises NotPackedAware (the trainer then loads the model with stock SDPA).

Knows nothing about data, losses or jobs.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

PACKED = "openft_packed_sdpa"


class NotPackedAware(RuntimeError):
    """The model's attention layers do not receive position_ids."""


def packed_sdpa(module, query, key, value, attention_mask, dropout: float = 0.0, scaling=None,
                position_ids=None, **kwargs):
    """query (B, H, T, D), key/value (B, Hkv, T, D) -> ((B, T, H, D), None)."""
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    if position_ids is None and attention_mask is None and query.shape[2] > 1:
        # Without position ids we cannot see where packed examples start: refuse rather than
        # let examples attend to each other (build_model then falls back to stock SDPA).
        raise NotPackedAware(f"{type(module).__name__} does not pass position_ids to its attention function")
    if position_ids is None or query.shape[0] != 1 or query.shape[2] != key.shape[2] or attention_mask is not None:
        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout, scaling=scaling,
                                      **kwargs)
    t = query.shape[2]
    pos = position_ids.reshape(-1)[:t]
    starts = (pos == 0).nonzero().flatten().tolist()
    if not starts or starts[0] != 0:
        starts = [0] + starts
    bounds = starts + [t]
    gqa = query.shape[1] != key.shape[1]
    dtype = query.dtype
    # fp32 inside: on CPU the flash kernel's backward is ~2x slower in bf16 than in fp32 for
    # short sequences, and attention is a small share of the FLOPs.
    q, k, v = query.float(), key.float(), value.float()
    forks = set(((pos[1:] != pos[:-1] + 1) & (pos[1:] != 0)).nonzero().flatten().add(1).tolist()) if t > 1 else set()
    with torch.autocast(query.device.type, enabled=False):
        outs = [F.scaled_dot_product_attention(
                    q[:, :, s:e], k[:, :, s:e], v[:, :, s:e], dropout_p=dropout, scale=scaling, enable_gqa=gqa,
                    **({"attn_mask": fork_mask(pos[s:e])} if forks and any(s < f < e for f in forks)
                       else {"is_causal": True}))
                for s, e in zip(bounds, bounds[1:])]
    out = outs[0] if len(outs) == 1 else torch.cat(outs, dim=2)
    return out.to(dtype).transpose(1, 2).contiguous(), None


def fork_mask(pos: torch.Tensor) -> torch.Tensor:
    """(L, L) bool, True = may attend, for one example whose positions `pos` (L,) jump back to
    k > 0 where a branch starts: causal, and a branch token sees the trunk's first k tokens and
    its own branch only."""
    n = pos.shape[0]
    new_branch = torch.ones(n, dtype=torch.bool, device=pos.device)
    new_branch[1:] = pos[1:] != pos[:-1] + 1
    branch = new_branch.long().cumsum(0) - 1                   # 0: the trunk (starts at position 0)
    prefix = torch.where(branch > 0, pos[new_branch.nonzero().flatten()][branch], 0)  # k of each token's branch
    causal = torch.ones(n, n, dtype=torch.bool, device=pos.device).tril()
    same = branch[:, None] == branch[None, :]
    shared = (branch[None, :] == 0) & (pos[None, :] < prefix[:, None])
    return causal & (same | shared)


def _no_mask(*args, **kwargs):
    return None  # the attention function finds the example boundaries itself


def register() -> str:
    """Make PACKED a valid `attn_implementation`; idempotent. Returns the name."""
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface

    AttentionInterface.register(PACKED, packed_sdpa)
    AttentionMaskInterface.register(PACKED, _no_mask)
    return PACKED
