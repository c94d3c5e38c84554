"""Varlen attention for packed rows on CPU: one causal SDPA call per example.

A packed row holds several examples, each with `position_ids` restarting at 0. The stock
path builds a (T, T) block-diagonal mask and runs masked SDPA over the whole row, doing
T^2 work where sum(len_i^2) is needed, through the slower masked kernel. Here the row is
cut at the restarts and each example runs `is_causal=True` SDPA on its own slice, the CPU
analogue of flash-attention's varlen kernel. Registered with transformers' attention and
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
    starts = (position_ids.reshape(-1)[:t] == 0).nonzero().flatten().tolist()
    if not starts or starts[0] != 0:
        starts = [0] + starts
    bounds = starts + [t]
    gqa = query.shape[1] != key.shape[1]
    dtype = query.dtype
    # fp32 inside: on CPU the flash kernel's backward is ~2x slower in bf16 than in fp32 for
    # short sequences, and attention is a small share of the FLOPs.
    q, k, v = query.float(), key.float(), value.float()
    with torch.autocast(query.device.type, enabled=False):
        outs = [F.scaled_dot_product_attention(q[:, :, s:e], k[:, :, s:e], v[:, :, s:e], is_causal=True,
                                               dropout_p=dropout, scale=scaling, enable_gqa=gqa)
                for s, e in zip(bounds, bounds[1:])]
    out = outs[0] if len(outs) == 1 else torch.cat(outs, dim=2)
    return out.to(dtype).transpose(1, 2).contiguous(), None


def _no_mask(*args, **kwargs):
    return None  # the attention function finds the example boundaries itself


def register() -> str:
    """Make PACKED a valid `attn_implementation`; idempotent. Returns the name."""
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface

    AttentionInterface.register(PACKED, packed_sdpa)
    AttentionMaskInterface.register(PACKED, _no_mask)
    return PACKED
