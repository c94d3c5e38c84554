"""Attention for packed rows: which kernel runs, and the three openft attention functions.

A packed row holds several examples, each with `position_ids` restarting at 0. A position that
jumps back to k > 0 starts a fork (DPO's shared prompt, openft.train.dpo): the tokens from there
on attend to the first k tokens of their example and to themselves, not to the branch before
them. Three functions, registered with transformers' AttentionInterface (`attention_for`):

- PACKED (the CPU default): the row is cut at the restarts (read with `.tolist()`, a host
  sync) and each example runs `is_causal=True` SDPA on its own slice in fp32; an example with
  forks runs one SDPA call with `fork_mask`. The fastest path measured on this CPU
  (benchmarks/varlen_attention.py: FlexAttention has no compiled backward on CPU, and its eager
  form computes the whole (T, T) score matrix).
- VARLEN (the CUDA default): one kernel call per layer for the whole row, from the boundaries
  the packer computed on the host (`cu_seq_lens_q/k` int32 on the device, `max_length_q/k`
  Python ints: transformers forwards these kwargs from the model to the attention function):
  flash-attn's `flash_attn_varlen_func` when the `flash_attn` package is installed, else
  PyTorch's `torch.nn.attention.varlen.varlen_attn` when present (torch >= 2.10), else
  FlexAttention. Rows with forks (or a sliding window, logit softcapping, fp32 inputs) run
  FlexAttention with a document + fork mask; with neither boundaries nor a block mask it
  falls back to PACKED's per-example path. No Python loop over examples, no host sync.
- FLEX: FlexAttention for every row (forced with OPENFT_ATTENTION=flex, for comparisons).
  The block mask is built from the position ids on the device (document ids, segment ids
  and each segment's fork point; no host sync), once per forward by `row_kwargs`. On CUDA
  flex_attention is compiled; on CPU it runs eagerly (torch refuses its backward on CPU in
  the public entry point; the eager dense path beneath computes it correctly, so openft lifts
  that check on CPU only: tests and CPU measurements, never the CPU default).

q/k/v reach the CUDA kernels in bf16 (autocast's dtype; the fp32 LoRA sum hands fp32 on), never
upcast. VARLEN/FLEX register no mask function, so transformers builds no mask and does not scan
the position ids for packing (which syncs); that also means they ignore a 2D padding mask:
openft's training rows are unpadded rows of batch 1. All three honour a layer's sliding window
and logit softcapping (Mistral, Gemma 2/3): PACKED with an explicit mask for the examples that
need one, and written-out attention where scores are soft-capped (SDPA cannot).

Knows nothing about data, losses or jobs (`row_kwargs` reads only a batch's tensors).
"""

from __future__ import annotations

import contextlib
import inspect
import itertools
import os
from functools import lru_cache

import torch
import torch.nn.functional as F

PACKED = "openft_packed"  # no "sdpa" in the name: transformers refuses those for Gemma 2 (softcapping)
VARLEN = "openft_varlen"
FLEX = "openft_flex"
ENV = "OPENFT_ATTENTION"
CHOICES = {"packed": PACKED, "varlen": VARLEN, "flex": FLEX, "sdpa": "sdpa"}
"""OPENFT_ATTENTION values (besides `auto`) -> attn_implementation."""


class NotPackedAware(RuntimeError):
    """The model's attention layers do not receive position_ids."""


def attention_for(device: torch.device, choice: str | None = None) -> str:
    """The attn_implementation for training on `device` (registered): `choice` or $OPENFT_ATTENTION
    when set (auto | packed | varlen | flex | sdpa), else PACKED on CPU and VARLEN elsewhere."""
    choice = (choice or os.environ.get(ENV) or "auto").strip().lower()
    if choice == "auto":
        choice = "packed" if device.type == "cpu" else "varlen"
    if choice not in CHOICES:
        from openft.errors import InvalidRequest

        raise InvalidRequest(f"{ENV} must be one of auto, {', '.join(CHOICES)}; got {choice!r}.", param=ENV)
    register()
    return CHOICES[choice]


def reads_forks(model) -> bool:
    """Does `model` run one of openft's attention functions (which read forks in position ids)?"""
    cfg = (model.get_base_model() if hasattr(model, "get_base_model") else model).config
    return getattr(cfg, "_attn_implementation", None) in (PACKED, VARLEN, FLEX)


@lru_cache(maxsize=1)
def varlen_kernel() -> str:
    """The kernel VARLEN uses for rows without forks: flash_attn | torch | flex."""
    try:
        import flash_attn  # noqa: F401

        return "flash_attn"
    except ImportError:
        pass
    try:
        from torch.nn.attention import varlen

        if hasattr(varlen, "varlen_attn"):
            return "torch"
    except ImportError:
        pass
    return "flex"


def row_kwargs(model, batch) -> dict:
    """Extra forward kwargs for one packed row (`batch` has input_ids and position_ids, maybe
    cu_seqlens/max_len and forks): the boundaries for VARLEN, a block mask built once per
    forward where FlexAttention will run; nothing for other implementations."""
    impl = getattr((model.get_base_model() if hasattr(model, "get_base_model") else model).config,
                   "_attn_implementation", None)
    if impl not in (VARLEN, FLEX):
        return {}
    cu = getattr(batch, "cu_seqlens", None)
    if (impl == VARLEN and cu is not None and not getattr(batch, "forks", False) and varlen_kernel() != "flex"
            and batch.input_ids.device.type != "cpu"):
        m = int(batch.max_len)
        return {"cu_seq_lens_q": cu, "cu_seq_lens_k": cu, "max_length_q": m, "max_length_k": m}
    return {"openft_block_mask": block_mask(batch.position_ids)}


# --- the functions transformers calls ------------------------------------------------------------

def _stock(module, query, key, value, attention_mask, dropout, scaling, kwargs):
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout, scaling=scaling,
                                  **kwargs)


def _not_a_packed_row(query, key, attention_mask, position_ids, module, cu=None) -> bool:
    if position_ids is None and cu is None and attention_mask is None and query.shape[2] > 1:
        # Without position ids we cannot see where packed examples start: refuse rather than
        # let examples attend to each other (build_model then falls back to stock SDPA).
        raise NotPackedAware(f"{type(module).__name__} does not pass position_ids to its attention function")
    return position_ids is None or query.shape[0] != 1 or query.shape[2] != key.shape[2] or attention_mask is not None


def packed_sdpa(module, query, key, value, attention_mask, dropout: float = 0.0, scaling=None,
                position_ids=None, sliding_window=None, softcap=None, **kwargs):
    """query (B, H, T, D), key/value (B, Hkv, T, D) -> ((B, T, H, D), None). A layer's sliding
    window (Mistral, Gemma 2/3) and logit softcapping (Gemma 2) are honoured per example."""
    if _not_a_packed_row(query, key, attention_mask, position_ids, module):
        if softcap:  # stock SDPA has no softcapping: the same arithmetic as eager, with the stock mask
            return _explicit_unpacked(query, key, value, attention_mask, scaling, softcap, sliding_window), None
        return _stock(module, query, key, value, attention_mask, dropout, scaling,
                      dict(kwargs, sliding_window=sliding_window))
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
    outs = []
    with torch.autocast(query.device.type, enabled=False):
        for s, e in itertools.pairwise(bounds):
            forked = forks and any(s < f < e for f in forks)
            windowed = sliding_window is not None and sliding_window < e - s
            if not (forked or windowed or softcap):
                outs.append(F.scaled_dot_product_attention(q[:, :, s:e], k[:, :, s:e], v[:, :, s:e], dropout_p=dropout,
                                                           scale=scaling, enable_gqa=gqa, is_causal=True))
                continue
            p = pos[s:e]
            allowed = fork_mask(p) if forked else torch.ones(e - s, e - s, dtype=torch.bool, device=p.device).tril()
            if windowed:  # by position: a fork's branch is as far from the trunk as its positions say
                allowed = allowed & (p[:, None] - p[None, :] < sliding_window)
            if softcap:
                outs.append(_explicit(q[:, :, s:e], k[:, :, s:e], v[:, :, s:e], allowed, scaling, softcap, dropout))
            else:
                outs.append(F.scaled_dot_product_attention(q[:, :, s:e], k[:, :, s:e], v[:, :, s:e], attn_mask=allowed,
                                                           dropout_p=dropout, scale=scaling, enable_gqa=gqa))
    out = outs[0] if len(outs) == 1 else torch.cat(outs, dim=2)
    return out.to(dtype).transpose(1, 2).contiguous(), None


def _explicit(q, k, v, allowed: torch.Tensor, scale, softcap, dropout: float = 0.0) -> torch.Tensor:
    """Attention written out (B, H, L, D) -> (B, H, L, D), for what SDPA cannot do: scores
    soft-capped as `softcap * tanh(s / softcap)` (Gemma 2), then `allowed` (bool, broadcast to
    the scores), softmax in fp32."""
    if k.shape[1] != q.shape[1]:
        rep = q.shape[1] // k.shape[1]
        k, v = k.repeat_interleave(rep, dim=1), v.repeat_interleave(rep, dim=1)
    scores = torch.matmul(q, k.transpose(-1, -2)) * (q.shape[-1] ** -0.5 if scale is None else scale)
    scores = softcap * torch.tanh(scores / softcap)
    scores = scores.masked_fill(~allowed, torch.finfo(scores.dtype).min)
    w = torch.softmax(scores, dim=-1, dtype=torch.float32).to(q.dtype)
    return torch.matmul(F.dropout(w, p=dropout) if dropout else w, v)


def _explicit_unpacked(query, key, value, attention_mask, scale, softcap, sliding_window) -> torch.Tensor:
    """Soft-capped attention for a batch that is not one packed row (padding, a cache): the stock
    mask when transformers built one, else causal aligned to the last keys -> (B, L, H, D)."""
    lq, lk = query.shape[2], key.shape[2]
    if attention_mask is not None:
        allowed = attention_mask if attention_mask.dtype == torch.bool else attention_mask == 0
        allowed = allowed[:, :, :, :lk]
    else:
        qi = torch.arange(lk - lq, lk, device=query.device)[:, None]
        ki = torch.arange(lk, device=query.device)[None, :]
        allowed = (ki <= qi) & ((qi - ki < sliding_window) if sliding_window else True)
    out = _explicit(query.float(), key.float(), value.float(), allowed, scale, softcap)
    return out.to(query.dtype).transpose(1, 2).contiguous()


def varlen_attention(module, query, key, value, attention_mask, dropout: float = 0.0, scaling=None,
                     position_ids=None, cu_seq_lens_q=None, max_length_q=None, openft_block_mask=None,
                     sliding_window=None, softcap=None, **kwargs):
    """VARLEN (see the module doc): query (1, H, T, D), key/value (1, Hkv, T, D) -> ((1, T, H, D), None)."""
    if _not_a_packed_row(query, key, attention_mask, position_ids, module, cu_seq_lens_q):
        return _stock(module, query, key, value, attention_mask, dropout,
                      scaling, dict(kwargs, sliding_window=sliding_window, softcap=softcap))
    dt = _kernel_dtype(query)
    plain = (openft_block_mask is None and cu_seq_lens_q is not None and dt != torch.float32 and not softcap
             and (sliding_window is None or sliding_window >= max_length_q))
    kernel = varlen_kernel()
    if dropout or (not plain and openft_block_mask is None and position_ids is None):
        return packed_sdpa(module, query, key, value, None, dropout, scaling, position_ids=position_ids,
                           sliding_window=sliding_window, softcap=softcap)
    if plain and kernel == "flash_attn":
        return _flash_attn(query.to(dt), key.to(dt), value.to(dt), cu_seq_lens_q, int(max_length_q), scaling), None
    if plain and kernel == "torch":
        return _torch_varlen(query.to(dt), key.to(dt), value.to(dt), cu_seq_lens_q, int(max_length_q), scaling), None
    if openft_block_mask is None or sliding_window is not None:
        openft_block_mask = block_mask(position_ids, sliding_window)
    return flex(query, key, value, openft_block_mask, scaling, softcap), None


def flex_attention_fn(module, query, key, value, attention_mask, dropout: float = 0.0, scaling=None,
                      position_ids=None, openft_block_mask=None, sliding_window=None, softcap=None, **kwargs):
    """FLEX: FlexAttention on every packed row -> ((1, T, H, D), None)."""
    if _not_a_packed_row(query, key, attention_mask, position_ids, module):
        return _stock(module, query, key, value, attention_mask, dropout,
                      scaling, dict(kwargs, sliding_window=sliding_window, softcap=softcap))
    if dropout:
        return packed_sdpa(module, query, key, value, None, dropout, scaling, position_ids=position_ids,
                           sliding_window=sliding_window, softcap=softcap)
    if openft_block_mask is None or sliding_window is not None:
        openft_block_mask = block_mask(position_ids, sliding_window)
    return flex(query, key, value, openft_block_mask, scaling, softcap), None


# --- kernels --------------------------------------------------------------------------------------

def _kernel_dtype(query: torch.Tensor) -> torch.dtype:
    """bf16/fp16 on CUDA under autocast (never upcast there); fp32 on CPU (as PACKED)."""
    if query.device.type == "cpu":
        return torch.float32
    if query.dtype == torch.float32 and torch.is_autocast_enabled(query.device.type):
        return torch.get_autocast_dtype(query.device.type)
    return query.dtype


def _flash_attn(q, k, v, cu: torch.Tensor, max_len: int, scale) -> torch.Tensor:
    """flash-attn's varlen kernel over the row: (1, H, T, D) -> (1, T, H, D). CUDA only."""
    from flash_attn import flash_attn_varlen_func

    tq, tk, tv = (x[0].transpose(0, 1) for x in (q, k, v))      # (T, H, D); GQA native
    out = flash_attn_varlen_func(tq, tk, tv, cu, cu, max_len, max_len, dropout_p=0.0, softmax_scale=scale,
                                 causal=True)
    return out.unsqueeze(0)


@lru_cache(maxsize=1)
def _torch_varlen_params() -> frozenset:
    from torch.nn.attention.varlen import varlen_attn

    return frozenset(inspect.signature(varlen_attn).parameters)


def _torch_varlen(q, k, v, cu: torch.Tensor, max_len: int, scale) -> torch.Tensor:
    """torch.nn.attention.varlen.varlen_attn over the row: (1, H, T, D) -> (1, T, H, D). CUDA only
    (flash kernels); its arguments changed between torch 2.10 and 2.11, so read the signature."""
    from torch.nn.attention.varlen import varlen_attn

    params = _torch_varlen_params()
    kw = {"window_size": (-1, 0)} if "window_size" in params else {"is_causal": True}
    d = q.shape[-1]
    if scale is not None and "scale" in params:
        kw["scale"] = scale
    elif scale is not None and abs(scale * d ** 0.5 - 1) > 1e-6:
        q = q * (scale * d ** 0.5)      # the kernel applies 1/sqrt(d)
    if k.shape[1] != q.shape[1]:
        if "enable_gqa" in params:
            kw["enable_gqa"] = True
        else:
            rep = q.shape[1] // k.shape[1]
            k, v = k.repeat_interleave(rep, dim=1), v.repeat_interleave(rep, dim=1)
    tq, tk, tv = (x[0].transpose(0, 1) for x in (q, k, v))
    out = varlen_attn(tq, tk, tv, cu, cu, max_len, max_len, **kw)
    return out.unsqueeze(0)


_compiled_flex = None


def flex(q, k, v, mask, scale, softcap=None) -> torch.Tensor:
    """FlexAttention with `mask` (a BlockMask): (B, H, T, D) -> (B, T, H, D). Compiled on CUDA;
    eager on CPU (fp32, torch's CPU backward check lifted: see the module doc)."""
    global _compiled_flex
    from torch.nn.attention.flex_attention import flex_attention

    dt = _kernel_dtype(q)
    score_mod = None
    if softcap:
        def score_mod(s, b, h, qi, ki):
            return softcap * torch.tanh(s / softcap)
    kw = {"score_mod": score_mod, "block_mask": mask, "scale": scale, "enable_gqa": q.shape[1] != k.shape[1]}
    if q.device.type == "cpu":
        with torch.autocast("cpu", enabled=False), _cpu_flex_backward():
            out = flex_attention(q.to(dt), k.to(dt), v.to(dt), **kw)
        return out.to(q.dtype).transpose(1, 2).contiguous()
    if _compiled_flex is None:
        _compiled_flex = torch.compile(flex_attention)
    return _compiled_flex(q.to(dt), k.to(dt), v.to(dt), **kw).transpose(1, 2).contiguous()


@contextlib.contextmanager
def _cpu_flex_backward():
    import torch.nn.attention.flex_attention as fa

    saved = getattr(fa, "_validate_device", None)
    if saved is not None:
        fa._validate_device = lambda *a, **k: None
    try:
        yield
    finally:
        if saved is not None:
            fa._validate_device = saved


# --- masks ------------------------------------------------------------------------------------------

def row_structure(pos: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(doc, seg, prefix), each shaped like `pos` (B, T), computed on pos's device without a host
    sync: the example of each token (a new one where the position is 0), its segment (a new one
    wherever positions do not continue: an example's start or a fork), and the position its
    segment starts at (0 in an example's trunk, k > 0 in a fork that shares the first k tokens)."""
    t = pos.shape[-1]
    cont = torch.zeros_like(pos, dtype=torch.bool)
    cont[:, 1:] = pos[:, 1:] == pos[:, :-1] + 1
    doc = (pos == 0).long().cumsum(-1)
    seg = (~cont).long().cumsum(-1)
    idx = torch.arange(t, device=pos.device).expand_as(pos)
    start = torch.where(cont, torch.zeros_like(idx), idx).cummax(-1).values
    prefix = pos - (idx - start)
    return doc, seg, prefix


def block_mask(position_ids: torch.Tensor, sliding_window: int | None = None):
    """FlexAttention BlockMask of a packed row (position_ids (B, T) or (T,)): causal, within one
    example, and a fork's tokens see their own branch and the trunk's first k tokens only
    (`fork_mask`, for the whole row at once); optionally a sliding window of that many tokens."""
    from torch.nn.attention.flex_attention import create_block_mask

    pos = position_ids.reshape(-1, position_ids.shape[-1])
    doc, seg, prefix = row_structure(pos)

    def mask_mod(b, h, qi, ki):
        ok = (qi >= ki) & (doc[b, qi] == doc[b, ki]) & (
            (seg[b, qi] == seg[b, ki]) | ((prefix[b, ki] == 0) & (pos[b, ki] < prefix[b, qi])))
        if sliding_window is not None:
            ok = ok & (qi - ki < sliding_window)
        return ok

    t = pos.shape[-1]
    return create_block_mask(mask_mod, pos.shape[0], None, t, t, device=pos.device)


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
    """Make PACKED, VARLEN and FLEX valid `attn_implementation`s; idempotent. Returns PACKED.
    Only PACKED gets a (no-op) mask function: without one transformers skips mask preparation
    altogether, including its scan of the position ids for packing (a host sync)."""
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface

    AttentionInterface.register(PACKED, packed_sdpa)
    AttentionMaskInterface.register(PACKED, _no_mask)
    AttentionInterface.register(VARLEN, varlen_attention)
    AttentionInterface.register(FLEX, flex_attention_fn)
    return PACKED
