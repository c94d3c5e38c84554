"""One loaded model (base weights once) and its batched forward over ragged sequences.

The runner keeps a KV cache per sequence in "slots" of one tensor
[layers, 2, slots, kv_heads, max_len, head_dim]; running sequences occupy slots 0..B-1, decoding
ones first (the runner keeps that order itself when a sequence leaves, see `remove`). A step feeds a flat
list of tokens: one per decoding sequence, then whole prompts of sequences that just joined.
Linear layers (and each row's own LoRA delta, see lora.py) run once over all tokens;
attention is batched for the decode rows and per sequence for prompts, except that prompts which
begin like another prompt of the same step feed only their own rest (prefill.py). The model's own modules
(embeddings, norms, rotary, MLP) are called as they are; only attention is written here.
A step where every sequence decodes can instead run in fixed shapes (static_decode.py: padded row
and key buckets, on CUDA captured once per shape in a CUDA graph); by default only on CUDA, where it
pays: on CPU the padding costs more than the launches it saves. Logits stay on the device.

Supports the Llama family layout (llama, mistral, qwen2). Knows nothing about sampling,
scheduling or HTTP.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from openft.errors import InvalidRequest
from openft.serve.lora import LoraAdapter, LoraBatch, wrap_linears
from openft.serve.prefill import plan_prompts, prompt_attention, share_prefixes
from openft.serve.static_decode import StaticDecoder

SUPPORTED = ("llama", "mistral", "qwen2")


@dataclass
class Slot:
    """What the runner needs from a sequence: its cache position, adapter and tokens to feed."""

    pos: int = 0                        # tokens already in the KV cache
    feed: list[int] = field(default_factory=list)
    adapter: LoraAdapter | None = None
    want_prompt_logits: bool = False    # echo + logprobs: logits at every prompt position
    slot: int = -1


def eos_token_ids(model, tokenizer) -> set[int]:
    """The ids that end a generation: the generation config's eos (one or a list) and the tokenizer's."""
    eos = model.generation_config.eos_token_id if model.generation_config is not None else None
    eos = eos if isinstance(eos, list) else [eos] if eos is not None else []
    if tokenizer.eos_token_id is not None:
        eos.append(tokenizer.eos_token_id)
    return {int(e) for e in eos}


def _rotate_half(x: torch.Tensor) -> torch.Tensor:
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat((-x2, x1), dim=-1)


class ModelRunner:
    def __init__(self, path: str, *, device: str, dtype: torch.dtype, name: str, static_decode: bool | None = None,
                 cuda_graphs: bool = True):
        """static_decode: run decode-only steps in fixed shapes (static_decode.py; None = on CUDA only, where
        it pays); cuda_graphs: capture those steps in CUDA graphs (CUDA only)."""
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.name, self.path, self.device, self.dtype = name, path, torch.device(device), dtype
        self.tokenizer = AutoTokenizer.from_pretrained(path)
        model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype)
        cfg = model.config
        if cfg.model_type not in SUPPORTED:
            raise InvalidRequest(f"Model {name}: architecture {cfg.model_type!r} is not served by the built-in "
                                 f"engine (supported: {', '.join(SUPPORTED)}).", param="model")
        self.model = model.to(self.device).eval()
        self.cfg = cfg
        self.lora = LoraBatch()
        self.linear_names = wrap_linears(self.model, self.lora)
        self.fused = [self._fuse_layer(i, layer) for i, layer in enumerate(self.model.model.layers)]
        self.n_layers = cfg.num_hidden_layers
        self.n_heads = cfg.num_attention_heads
        self.n_kv = getattr(cfg, "num_key_value_heads", None) or self.n_heads
        self.head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // self.n_heads
        self.context_len = int(getattr(cfg, "max_position_embeddings", 2048))
        self.eos_ids = eos_token_ids(model, self.tokenizer)
        self._cache: torch.Tensor | None = None
        use_static = self.device.type == "cuda" if static_decode is None else static_decode
        self.static = StaticDecoder(self, graphs=cuda_graphs and self.device.type == "cuda") if use_static else None
        self.seqs: list[Slot] = []      # index == slot
        self.steps = 0                  # forwards run (stats)
        self.peak_rows = 0              # most sequences in one forward (stats)
        self.peak_adapters = 0          # most distinct adapters in one forward (stats)
        self.shared_tokens = 0          # prompt tokens not fed because a leader's prefix was copied (stats)
        self.merged_adapter: str | None = None  # key of the LoRA adapter merged into these weights, if any

    def _fuse_layer(self, i: int, layer) -> tuple:
        """q|k|v and gate|up as one matmul each. The base Linears' weights become views into the fused
        weight (no copy); their LoRA deltas are fused alike by LoraBatch (block-diagonal B)."""
        a, m = layer.self_attn, layer.mlp
        out = []
        for name, subs in ((f"model.layers.{i}.self_attn.qkv", ("q_proj", "k_proj", "v_proj")),
                           (f"model.layers.{i}.mlp.gate_up", ("gate_proj", "up_proj"))):
            parent = a if name.endswith("qkv") else m
            wrappers = [getattr(parent, sub) for sub in subs]
            linears = [w.base_layer for w in wrappers]
            weight = torch.cat([lin.weight.detach() for lin in linears])
            bias = None
            if any(lin.bias is not None for lin in linears):
                bias = torch.cat([lin.bias.detach() if lin.bias is not None else
                                  torch.zeros(lin.out_features, dtype=weight.dtype, device=weight.device)
                                  for lin in linears])
            sizes = [lin.out_features for lin in linears]
            for lin, w_view in zip(linears, weight.split(sizes)):
                lin.weight = torch.nn.Parameter(w_view, requires_grad=False)
            self.lora.fused[name] = ([w.name for w in wrappers], sizes)
            out.append((name, weight, bias))
        return tuple(out)

    def _proj(self, x: torch.Tensor, fused: tuple) -> torch.Tensor:
        name, weight, bias = fused
        y = F.linear(x, weight, bias)
        return self.lora.add_delta(name, x, y)

    # ---- slots -------------------------------------------------------------------------
    def add(self, seq: Slot) -> None:
        seq.slot = len(self.seqs)
        seq.pos = 0
        self.seqs.append(seq)

    @torch.inference_mode()
    def remove(self, seq: Slot) -> None:
        """Free `seq`'s slot, keeping the order `forward` needs: decoding sequences (pos > 0) first,
        then those whose prompt is still to feed. The hole is filled from the end of its own
        group, and a decoding hole then moves to the group boundary, filled by the last sequence;
        so a cancel in the pass that admits new prompts never puts a prompt among decoders."""
        i = seq.slot
        if seq.pos > 0:
            j = sum(1 for s in self.seqs if s.pos > 0) - 1  # the last decoding slot
            self._move(j, i)
            i = j
        self._move(len(self.seqs) - 1, i)
        self.seqs.pop()
        seq.slot = -1

    def _move(self, src: int, dst: int) -> None:
        """Put the sequence of slot `src` into slot `dst` (its KV cache with it)."""
        if src == dst:
            return
        s = self.seqs[src]
        if self.cache is not None and s.pos > 0:
            self.cache[:, :, dst, :, : s.pos] = self.cache[:, :, src, :, : s.pos]
        self.seqs[dst] = s
        s.slot = dst

    @property
    def cache(self) -> torch.Tensor | None:
        """[layers, 2, slots, kv_heads, max_len, head_dim]; replacing it (growth, release_memory) drops the
        CUDA graphs, which read it by address."""
        return self._cache

    @cache.setter
    def cache(self, value: torch.Tensor | None) -> None:
        if value is not self._cache and self.static is not None:
            self.static.reset()
        self._cache = value

    def _ensure_cache(self, slots: int, length: int) -> None:
        c = self.cache
        if c is not None and c.shape[2] >= slots and c.shape[4] >= length:
            return
        s_cap = max(slots, c.shape[2] if c is not None else 0)
        s_cap = max(4, 1 << (s_cap - 1).bit_length())
        l_need = max(length, c.shape[4] if c is not None else 0)
        l_cap = min(max(256, 1 << (l_need - 1).bit_length()), max(self.context_len, l_need))
        new = torch.zeros(self.n_layers, 2, s_cap, self.n_kv, l_cap, self.head_dim, dtype=self.dtype,
                          device=self.device)
        if c is not None:
            new[:, :, : c.shape[2], :, : c.shape[4]] = c
        self.cache = new

    # ---- forward -----------------------------------------------------------------------
    def _bucket(self, n: int) -> int:
        """Token count rounded up, on CPU in bf16/fp16 only: oneDNN builds a kernel per matmul shape,
        so a few recurring shapes beat a new one at every step (fp32 goes to MKL, no padding)."""
        if self.device.type != "cpu" or self.dtype == torch.float32:
            return n
        if n <= 16:
            return 1 << (n - 1).bit_length()
        step = 16 if n <= 256 else 64
        return -(-n // step) * step

    @torch.inference_mode()
    def forward(self) -> tuple[torch.Tensor, dict[int, torch.Tensor]]:
        """Feed every sequence its `feed` tokens; returns (last-position logits [B, vocab] float32 in
        slot order, on the device, {slot: prompt logits [T, vocab]} for sequences that asked for them).
        A step where every sequence decodes runs in fixed shapes when `static` is on (static_decode.py)."""
        seqs = self.seqs
        if self.static is not None and seqs and all(s.pos > 0 and len(s.feed) == 1 for s in seqs):
            return self.static.step(), {}
        n_dec = 0
        while n_dec < len(seqs) and seqs[n_dec].pos > 0:
            n_dec += 1
        if any(s.pos > 0 for s in seqs[n_dec:]) or any(len(s.feed) != 1 for s in seqs[:n_dec]):
            raise RuntimeError("runner: decoding sequences must come first and feed one token each")
        # joining prompts that begin like another one feed only the rest (see prefill.py)
        shared = share_prefixes(seqs[n_dec:], n_dec) if len(seqs) - n_dec > 1 else {}
        tokens, positions, ranges = [], [], []
        for i, s in enumerate(seqs):
            skip = shared[i][1] if i in shared else 0
            start = len(tokens)
            tokens += s.feed[skip:]
            positions += range(s.pos + skip, s.pos + len(s.feed))
            ranges.append((start, len(tokens), s.adapter))
        self.shared_tokens += sum(n for _, n in shared.values())
        self._ensure_cache(len(seqs), max(s.pos + len(s.feed) for s in seqs))
        n_pad = self._bucket(len(tokens)) - len(tokens)   # rows that belong to no sequence
        tokens += [0] * n_pad
        positions += [0] * n_pad
        row_adapters = [a for st, e, a in ranges for _ in range(e - st)] + [None] * n_pad
        self.peak_adapters = max(self.peak_adapters, self.lora.set_rows(row_adapters, self.device, self.dtype))
        self.steps += 1
        self.peak_rows = max(self.peak_rows, len(seqs))
        dev = self.device
        plan = plan_prompts(ranges, positions, shared, dev) if shared else None
        ids = torch.tensor(tokens, device=dev)
        pos_t = torch.tensor(positions, device=dev)
        inner = self.model.model
        x = inner.embed_tokens(ids)                                     # [T, hidden]
        cos, sin = inner.rotary_emb(x, pos_t[None])                     # [1, T, head_dim]
        cos, sin = cos[0][:, None, :], sin[0][:, None, :]
        dec_pos = pos_t[:n_dec]
        dec_slots = torch.arange(n_dec, device=dev)
        l_max = max(positions[:n_dec]) + 1 if n_dec else 0              # from the host list: no device sync
        dec_mask = (torch.arange(l_max, device=dev)[None, :] <= dec_pos[:, None])[:, None, None, :] if n_dec else None
        T, H, D = len(tokens), self.n_heads, self.head_dim

        def attend(li: int, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
            kc, vc = self.cache[li, 0], self.cache[li, 1]                # [slots, KV, L, D]
            out = torch.zeros(T, H, D, dtype=q.dtype, device=dev)
            if n_dec:
                kc[dec_slots, :, dec_pos] = k[:n_dec]
                vc[dec_slots, :, dec_pos] = v[:n_dec]
                o = F.scaled_dot_product_attention(q[:n_dec, :, None, :], kc[:n_dec, :, :l_max], vc[:n_dec, :, :l_max],
                                                   attn_mask=dec_mask, enable_gqa=True)
                out[:n_dec] = o[:, :, 0, :]
            for si in range(n_dec, len(seqs)):
                if si in shared:
                    continue                                            # a member: prompt_attention below
                s, e, _ = ranges[si]
                kj, vj = k[s:e].transpose(0, 1), v[s:e].transpose(0, 1)  # [KV, t, D]
                kc[si, :, : e - s] = kj
                vc[si, :, : e - s] = vj
                o = F.scaled_dot_product_attention(q[s:e].transpose(0, 1)[None], kj[None], vj[None],
                                                   is_causal=True, enable_gqa=True)
                out[s:e] = o[0].transpose(0, 1)
            if plan is not None:                                        # after the leaders' keys are in
                prompt_attention(self.cache[li], q, k, v, out, plan)
            return out

        x = self.layers(x, cos, sin, attend)
        self.lora.clear()
        last_rows = torch.tensor([e - 1 for _, e, _ in ranges], device=dev)
        logits = self.model.lm_head(inner.norm(x.index_select(0, last_rows))).float()
        prompt_logits = {}
        for si, seq in enumerate(seqs):
            if si >= n_dec and seq.want_prompt_logits:
                s, e, _ = ranges[si]
                prompt_logits[si] = self.model.lm_head(inner.norm(x[s:e])).float()
        for seq in seqs:
            seq.pos += len(seq.feed)
            seq.feed = []
        return logits, prompt_logits

    def layers(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, attend) -> torch.Tensor:
        """The decoder layers over the step's flat rows x [T, hidden] (cos, sin [T, 1, head_dim]);
        attend(layer, q [T, H, D], k, v [T, KV, D]) writes the cache and returns attention [T, H, D]."""
        T, H, KV, D = x.shape[0], self.n_heads, self.n_kv, self.head_dim
        for li, layer in enumerate(self.model.model.layers):
            attn, (f_qkv, f_gu) = layer.self_attn, self.fused[li]
            h = F.rms_norm(x, (x.shape[-1],), layer.input_layernorm.weight, layer.input_layernorm.variance_epsilon)
            qkv = self._proj(h, f_qkv)                                  # [T, (H + 2 KV) D]
            qk = qkv[:, : (H + KV) * D].reshape(T, H + KV, D)
            qk = qk * cos + _rotate_half(qk) * sin                      # rotary on q and k at once
            q, k = qk[:, :H], qk[:, H:]
            v = qkv[:, (H + KV) * D:].reshape(T, KV, D)
            out = attend(li, q, k, v)
            x = x + attn.o_proj(out.reshape(T, H * D))
            mlp, norm = layer.mlp, layer.post_attention_layernorm
            gate, up = self._proj(F.rms_norm(x, (x.shape[-1],), norm.weight, norm.variance_epsilon), f_gu).chunk(2, dim=-1)
            x = x + mlp.down_proj(mlp.act_fn(gate) * up)
        return x
