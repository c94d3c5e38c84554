"""A runner for any architecture transformers loads: the model's own forward and its own cache.

`build_runner(path, ...)` is the one choice of runner class: the fast `ModelRunner` (model_runner.py,
its own attention over a slot cache) for the layouts it knows (`SUPPORTED`, without a sliding
window, which it does not apply), `GeneralRunner` otherwise (Gemma, Phi, Qwen3, GPT-NeoX, OPT...).

`GeneralRunner` has the interface the engine uses (`add`/`remove`/`forward` over `Slot`s, the
tokenizer, `eos_ids`, `context_len`, `cfg`, `linear_names`, `merged_adapter`, the stats fields)
and computes with `model(...)` as `generate` does:
- a prompt is one forward of [1, T] tokens; the model creates its own cache (whatever class its
  architecture needs: DynamicCache with sliding-window layers, linear-attention state...), which
  the runner keeps per sequence;
- decode rows are batched where the cache allows: when every layer of the cache is a plain
  `DynamicLayer`, all decode rows go in one forward, their keys/values left-padded to the longest
  and hidden by a 2-D attention mask with explicit position ids (what `generate` does for a padded
  batch); with sliding-window layers, rows of equal length go together (no padding, so a window's
  bookkeeping stays exact); any other cache layer runs one sequence per forward.
  The batched cache is built each step by concatenating the sequences' own tensors and split back
  afterwards; a DynamicLayer copies its whole cache at every update anyway, so this costs about
  one more copy of the keys/values per step. Correct for every architecture first, batched second.
- per-row multi-LoRA: every nn.Linear is wrapped by openft.serve.lora (`wrap_linears`); the runner
  sets the batch's row -> adapter map (`LoraBatch.set_rows`) before each forward it runs and
  flattens each wrapped Linear's input to [rows, in] (hooks), so row r of the map is token r of
  the forward ([batch, time] in row-major order). A Linear that sees only some of the tokens (a
  per-expert loop in some mixture-of-experts models) cannot tell rows apart: a batch that mixes
  adapters there fails its step with an error rather than give a row another row's adapter.

Why not transformers' own continuous batching (`generate_batch`, `init_continuous_batching`,
ContinuousBatchingManager with its PagedAttentionCache): it owns the scheduler and the sampling
(its step ends in its own argmax/multinomial and returns tokens, with a log-probability only for
the chosen one), so the engine's per-request seeds, top_p, grammar masks, top_logprobs and echo
logprobs, stop strings and cancellation cannot sit on top of it; the order of tokens in its flat
batch is private to its scheduler, so a per-row LoRA map cannot be set; and its paged attention
exists only for models whose attention goes through the attention-interface registry. The
model's own forward with the model's own cache serves every causal LM `generate` serves.

Knows nothing about sampling, scheduling or HTTP.
"""

from __future__ import annotations

import copy
import inspect

import torch

from openft.serve.lora import LoraBatch, MultiLoraLinear, wrap_linears
from openft.serve.model_runner import SUPPORTED, ModelRunner, Slot, eos_token_ids


def fast_path_serves(cfg) -> bool:
    """Whether model_runner.py's own attention computes this config exactly: a SUPPORTED layout with no
    sliding-window layer (model_runner.py attends to the whole context)."""
    if cfg.model_type not in SUPPORTED:
        return False
    if "sliding_attention" in (getattr(cfg, "layer_types", None) or ()):
        return False
    window = getattr(cfg, "sliding_window", None)
    if cfg.model_type == "qwen2":
        window = window if getattr(cfg, "use_sliding_window", False) else None
    return window is None or window >= int(getattr(cfg, "max_position_embeddings", 0) or 0)


def build_runner(path: str, *, device: str, dtype: torch.dtype, name: str, cuda_graphs: bool = True):
    """The runner for the model in `path`: ModelRunner where fast_path_serves (its decode steps
    captured as CUDA graphs on CUDA when `cuda_graphs`), else GeneralRunner."""
    from transformers import AutoConfig

    if fast_path_serves(AutoConfig.from_pretrained(path)):
        return ModelRunner(path, device=device, dtype=dtype, name=name, cuda_graphs=cuda_graphs)
    return GeneralRunner(path, device=device, dtype=dtype, name=name)


def _flatten_rows(module, args):
    x = args[0]
    module._openft_shape = x.shape[:-1]
    return (x.reshape(-1, x.shape[-1]), *args[1:])


def _unflatten_rows(module, args, out):
    return out.view(*module._openft_shape, out.shape[-1])


class GeneralRunner:
    def __init__(self, path: str, *, device: str, dtype: torch.dtype, name: str):
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.name, self.path, self.device, self.dtype = name, path, torch.device(device), dtype
        self.tokenizer = AutoTokenizer.from_pretrained(path)
        model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype)
        self.model = model.to(self.device).eval()
        self.cfg = model.config.get_text_config(decoder=True)
        self.lora = LoraBatch()
        self.linear_names = wrap_linears(self.model, self.lora)
        for m in self.model.modules():
            if isinstance(m, MultiLoraLinear):
                m.register_forward_pre_hook(_flatten_rows)
                m.register_forward_hook(_unflatten_rows)
        self.context_len = int(getattr(self.cfg, "max_position_embeddings", None) or 2048)
        self.eos_ids = eos_token_ids(model, self.tokenizer)
        params = inspect.signature(model.forward).parameters
        self._cache_arg = "cache" if "cache" in params else "past_key_values"   # transformers 5 renamed it
        keep = getattr(model, "_supports_logits_to_keep", None)
        self._logits_to_keep = bool(keep and keep())
        self.cache = None               # the engine's release_memory reads it: caches here are per sequence
        self._kv: dict[int, object] = {}  # id(seq) -> the model's own cache object for that sequence
        self.seqs: list[Slot] = []
        self.steps = 0                  # forwards run (stats)
        self.peak_rows = 0              # most sequences in one engine step (stats)
        self.peak_adapters = 0          # most distinct adapters in one forward (stats)
        self.shared_tokens = 0          # prompt prefixes shared (stats; never here)
        self.merged_adapter: str | None = None

    # ---- slots -------------------------------------------------------------------------
    def add(self, seq: Slot) -> None:
        seq.slot = len(self.seqs)
        seq.pos = 0
        self.seqs.append(seq)

    def remove(self, seq: Slot) -> None:
        self.seqs.pop(seq.slot)
        for i, s in enumerate(self.seqs):
            s.slot = i
        self._kv.pop(id(seq), None)
        seq.slot = -1

    # ---- forward -----------------------------------------------------------------------
    @torch.inference_mode()
    def forward(self) -> tuple[torch.Tensor, dict[int, torch.Tensor]]:
        """Feed every sequence its `feed` tokens; returns (last-position logits [B, vocab] float32 in
        slot order, {slot: prompt logits [T, vocab]} for joining sequences that asked for them)."""
        seqs = self.seqs
        self.peak_rows = max(self.peak_rows, len(seqs))
        last: list[torch.Tensor | None] = [None] * len(seqs)
        prompt_logits: dict[int, torch.Tensor] = {}
        decode = [i for i, s in enumerate(seqs) if s.pos > 0 and len(s.feed) == 1 and id(s) in self._kv]
        for group in self._decode_groups(decode):
            for i, row in zip(group, self._decode(group)):
                last[i] = row
        for i, s in enumerate(seqs):
            if last[i] is None:
                logits = self._feed(s, keep_all=s.pos == 0 and s.want_prompt_logits)
                last[i] = logits[-1]
                if s.pos == 0 and s.want_prompt_logits:
                    prompt_logits[i] = logits
        for s in seqs:
            s.pos += len(s.feed)
            s.feed = []
        return torch.stack(last), prompt_logits

    def _run(self, rows: list, **inputs):
        """One model forward with `rows` (one adapter or None per token, [batch, time] row-major)."""
        self.peak_adapters = max(self.peak_adapters, self.lora.set_rows(rows, self.device, self.dtype))
        self.steps += 1
        try:
            return self.model(use_cache=True, **inputs)
        finally:
            self.lora.clear()

    def _feed(self, s: Slot, keep_all: bool) -> torch.Tensor:
        """One sequence's feed on its own cache; logits [T or 1, vocab] float32."""
        ids = torch.tensor([s.feed], device=self.device)
        extra = {} if keep_all or not self._logits_to_keep else {"logits_to_keep": 1}
        out = self._run([s.adapter] * len(s.feed), input_ids=ids, **{self._cache_arg: self._kv.get(id(s))}, **extra)
        self._kv[id(s)] = _cache_of(out)
        return out.logits[0].float()

    def _decode_groups(self, decode: list[int]) -> list[list[int]]:
        """Decode rows that can share one forward: all of them when every cache layer is a plain
        DynamicLayer (left padding), rows of equal length when there are sliding-window layers
        too, one per forward for any other cache."""
        from transformers.cache_utils import DynamicLayer, DynamicSlidingWindowLayer

        groups: dict[object, list[int]] = {}
        for i in decode:
            layers = getattr(self._kv[id(self.seqs[i])], "layers", None) or [None]
            kinds = {type(layer) for layer in layers}
            if kinds == {DynamicLayer}:
                key = "pad"
            elif kinds <= {DynamicLayer, DynamicSlidingWindowLayer}:
                key = ("len", self.seqs[i].pos)
            else:
                key = ("one", i)
            groups.setdefault(key, []).append(i)
        return list(groups.values())

    def _decode(self, group: list[int]) -> list[torch.Tensor]:
        """One token for each sequence of `group` in one forward; their last logits [vocab] float32."""
        seqs = [self.seqs[i] for i in group]
        if len(seqs) == 1:
            return [self._feed(seqs[0], keep_all=False)[-1]]
        caches = [self._kv[id(s)] for s in seqs]
        lens = [s.pos for s in seqs]
        L = max(lens)
        batched = copy.copy(caches[0])
        batched.layers = [_stack([c.layers[li] for c in caches], lens, L) for li in range(len(caches[0].layers))]
        dev = self.device
        inputs = {"input_ids": torch.tensor([[s.feed[0]] for s in seqs], device=dev)}
        if any(n != L for n in lens):   # left padding: mask the pads, give each row its own position
            mask = torch.ones(len(seqs), L + 1, dtype=torch.long, device=dev)
            for j, n in enumerate(lens):
                mask[j, : L - n] = 0
            inputs["attention_mask"] = mask
            inputs["position_ids"] = torch.tensor([[s.pos] for s in seqs], device=dev)
        if self._logits_to_keep:
            inputs["logits_to_keep"] = 1
        out = self._run([s.adapter for s in seqs], **{self._cache_arg: batched}, **inputs)
        new = _cache_of(out)
        for j, (s, n) in enumerate(zip(seqs, lens)):
            own = copy.copy(new)
            own.layers = [_row(layer, j, L - n) for layer in new.layers]
            self._kv[id(s)] = own
        return list(out.logits[:, -1].float())


def _cache_of(out):
    cache = getattr(out, "cache", None)
    return cache if cache is not None else out.past_key_values


def _stack(layers: list, lens: list[int], L: int):
    """One cache layer holding `layers` (one per sequence, [1, KV, n, D] each) as a batch, each
    left-padded with zeros to L tokens (lens are equal where there are sliding-window layers)."""
    out = copy.copy(layers[0])
    if not getattr(out, "is_initialized", False) or out.keys is None:
        return out
    ks, vs = [], []
    for layer, n in zip(layers, lens):
        k, v = layer.keys, layer.values
        pad = L - n if k.shape[-2] == n else 0
        if pad:
            k = torch.cat([k.new_zeros(*k.shape[:-2], pad, k.shape[-1]), k], dim=-2)
            v = torch.cat([v.new_zeros(*v.shape[:-2], pad, v.shape[-1]), v], dim=-2)
        ks.append(k)
        vs.append(v)
    out.keys, out.values = torch.cat(ks), torch.cat(vs)
    return out


def _row(layer, j: int, pad: int):
    """Row j of a batched cache layer, its left padding dropped."""
    out = copy.copy(layer)
    if getattr(out, "is_initialized", False) and out.keys is not None:
        out.keys, out.values = layer.keys[j: j + 1, :, pad:], layer.values[j: j + 1, :, pad:]
    return out
