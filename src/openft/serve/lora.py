"""LoRA adapters for serving: load a PEFT folder, keep an LRU of them, apply many per batch.

`load_adapter` reads a standard PEFT folder (adapter_config.json + adapter_model.safetensors)
into per-module (A^T, B^T * scale) pairs. `AdapterCache` keeps loaded adapters bounded by count
and bytes (least recently used goes first). `MultiLoraLinear` wraps a base `nn.Linear` (PEFT's
`base_layer` idea: wrap, don't subclass) and adds to each row its own adapter's delta, as LoRAX
and punica do: y = W x + B_g (A_g x) for rows of adapter g; rows of the base model get none. The
batch's adapters, concatenated, and the row->adapter mask live in a `LoraBatch` owned by the
model runner.

Knows nothing about sampling, scheduling or HTTP.
"""

from __future__ import annotations

import json
import math
import re
import threading
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from openft.errors import InvalidRequest, NotFound

_KEY = re.compile(r"^(?:base_model\.model\.)?(?P<module>.+)\.lora_(?P<ab>[AB])(?:\.[^.]+)?\.weight$")


@dataclass
class LoraAdapter:
    key: str
    path: str
    weights: dict[str, tuple[torch.Tensor, torch.Tensor]]  # module name -> (A^T [in, r], B^T*scale [r, out])
    nbytes: int

    def get(self, module: str):
        return self.weights.get(module)


def _pattern_value(patterns: dict, module: str, default):
    for pat, value in (patterns or {}).items():
        if re.fullmatch(rf"(.*\.)?{pat}", module) or module.endswith(pat):
            return value
    return default


def load_adapter(path: str | Path, key: str, module_names: set[str], dtype: torch.dtype,
                 device: torch.device | str = "cpu") -> LoraAdapter:
    """Read a PEFT LoRA folder; every adapted module must be one of `module_names` (Linear layers)."""
    from safetensors.torch import load_file

    folder = Path(path)
    cfg_file, w_file = folder / "adapter_config.json", folder / "adapter_model.safetensors"
    if not cfg_file.exists() or not w_file.exists():
        raise NotFound(f"Adapter folder {folder} is missing adapter_config.json or adapter_model.safetensors.",
                       param="model", code="model_not_found")
    cfg = json.loads(cfg_file.read_text())
    if cfg.get("peft_type", "LORA") != "LORA":
        raise InvalidRequest(f"{cfg_file}: peft_type {cfg.get('peft_type')!r} is not served (only LORA).", param="model")
    if cfg.get("use_dora"):
        raise InvalidRequest(f"{cfg_file}: DoRA adapters are not served by the built-in engine.", param="model")
    if cfg.get("modules_to_save"):
        raise InvalidRequest(f"{cfg_file}: modules_to_save {cfg['modules_to_save']} is not served "
                             "by the built-in engine (export it merged instead).", param="model")
    r0, alpha0 = int(cfg.get("r", 8)), float(cfg.get("lora_alpha", 8))
    rslora, fan_in_fan_out = bool(cfg.get("use_rslora")), bool(cfg.get("fan_in_fan_out"))

    pairs: dict[str, dict[str, torch.Tensor]] = {}
    for k, t in load_file(str(w_file)).items():
        m = _KEY.match(k)
        if not m:
            raise InvalidRequest(f"{w_file}: tensor {k!r} is not a LoRA A/B weight this engine serves.", param="model")
        pairs.setdefault(m["module"], {})[m["ab"]] = t
    weights, nbytes = {}, 0
    for module, ab in pairs.items():
        if module not in module_names:
            raise InvalidRequest(f"{w_file}: adapter targets {module!r}, which is not a Linear layer of the base model.",
                                 param="model")
        if set(ab) != {"A", "B"}:
            raise InvalidRequest(f"{w_file}: module {module!r} lacks lora_A or lora_B.", param="model")
        A, B = ab["A"].float(), ab["B"].float()           # A [r, in], B [out, r]
        if fan_in_fan_out:
            A, B = A.T, B.T
        r = A.shape[0]
        alpha = float(_pattern_value(cfg.get("alpha_pattern"), module, alpha0))
        r_cfg = int(_pattern_value(cfg.get("rank_pattern"), module, r0))
        if r_cfg != r:
            raise InvalidRequest(f"{w_file}: module {module!r} has rank {r}, config says {r_cfg}.", param="model")
        scale = alpha / math.sqrt(r) if rslora else alpha / r
        a_t = A.T.contiguous().to(device=device, dtype=dtype)
        b_t = (B.T * scale).contiguous().to(device=device, dtype=dtype)
        weights[module] = (a_t, b_t)
        nbytes += a_t.numel() * a_t.element_size() + b_t.numel() * b_t.element_size()
    if not weights:
        raise InvalidRequest(f"{w_file}: no LoRA weights found.", param="model")
    return LoraAdapter(key=key, path=str(folder), weights=weights, nbytes=nbytes)


class AdapterCache:
    """Loaded adapters, least recently used first out, bounded by count and bytes. Thread-safe."""

    def __init__(self, max_adapters: int, max_bytes: int):
        self.max_adapters, self.max_bytes = max(1, max_adapters), max_bytes
        self._items: OrderedDict[str, LoraAdapter] = OrderedDict()
        self._lock = threading.Lock()
        self._loading: dict[str, threading.Lock] = {}   # key -> held while that key loads
        self.loads = 0  # how many times an adapter was read from disk (tests, stats)

    def get_or_load(self, key: str, loader) -> LoraAdapter:
        """The cached adapter, or `loader()`'s, loaded once however many requests ask at once (a
        second copy would put the same adapter twice into a batch's concatenated weights)."""
        hit = self._hit(key)
        if hit is not None:
            return hit
        with self._lock:
            gate = self._loading.setdefault(key, threading.Lock())
        with gate:  # outside the cache lock: disk reads do not block hits of other keys
            hit = self._hit(key)
            if hit is not None:
                return hit
            try:
                adapter = loader()
            finally:
                with self._lock:
                    self._loading.pop(key, None)
            if adapter.nbytes > self.max_bytes:
                raise InvalidRequest(f"Adapter {key} needs {adapter.nbytes} bytes, more than "
                                     f"serve_max_adapter_bytes={self.max_bytes}.", param="model")
            with self._lock:
                self.loads += 1
                self._items[key] = adapter
                self._items.move_to_end(key)
                while len(self._items) > self.max_adapters or self.bytes > self.max_bytes:
                    self._items.popitem(last=False)  # running sequences keep their own reference
                return adapter

    def _hit(self, key: str) -> LoraAdapter | None:
        with self._lock:
            if key in self._items:
                self._items.move_to_end(key)
                return self._items[key]
        return None

    def evict_where(self, pred) -> int:
        with self._lock:
            keys = [k for k in self._items if pred(k)]
            for k in keys:
                del self._items[k]
            return len(keys)

    @property
    def bytes(self) -> int:
        return sum(a.nbytes for a in self._items.values())

    def keys(self) -> list[str]:
        with self._lock:
            return list(self._items)


class LoraBatch:
    """The adapters of the current forward, concatenated: for each module A_cat [in, W] and
    B_cat [W, out] (adapter g owns columns cols_g of W), and a [tokens, W] 0/1 mask that keeps,
    for each row, only its own adapter's columns (None when one adapter owns every row).
    Delta = ((x @ A_cat) * mask) @ B_cat: three ops per Linear whatever the number of adapters,
    no gathers (the extra work, tokens x W x (in+out), is tiny next to the base matmul).

    The mask is built once per batch composition (the rows' adapters in order), not per step:
    `set_rows` keeps the last one. `static_rows` is the fixed-shape form for the static decode
    step (see static_decode.py): per (rows, adapters) one mask buffer (and its repeats for the
    fused projections) that is rewritten in place when the composition changes, so a captured
    CUDA graph that reads it stays valid."""

    def __init__(self, max_combos: int = 8):
        self.weights: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
        self.mask: torch.Tensor | None = None
        self._combos: OrderedDict[tuple, tuple[list, dict, torch.Tensor]] = OrderedDict()
        self.max_combos = max_combos
        self.fused: dict[str, tuple[list[str], list[int]]] = {}  # fused name -> (module names, out sizes)
        self._mask_rep: dict[int, torch.Tensor] = {}
        self._last: tuple | None = None     # (rows key, combo, mask, mask repeats) of the last set_rows
        self._static: OrderedDict[tuple, list] = OrderedDict()  # (rows, combo) -> [rows key, mask, repeats, combo]
        self.mask_builds = 0                # masks built (stats: once per composition)

    def add_delta(self, name: str, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """y += each row's adapter delta for module (or fused module) `name`; y is returned."""
        w = self.weights.get(name)
        if w is None:
            return y
        h = x @ w[0]
        if self.mask is not None:
            n = h.shape[1] // self.mask.shape[1]
            if n > 1:
                if n not in self._mask_rep:
                    self._mask_rep[n] = self.mask.repeat(1, n)
                h = h * self._mask_rep[n]
            else:
                h = h * self.mask
        return y.addmm_(h, w[1])

    def clear(self) -> None:
        self.weights, self.mask, self._mask_rep = {}, None, {}

    def _combo(self, row_adapters: list, device, dtype) -> tuple | None:
        present = {id(a): a for a in row_adapters if a is not None}
        if not present:
            return None
        adapters = sorted(present.values(), key=lambda a: a.key)
        key = tuple(id(a) for a in adapters)
        hit = self._combos.get(key)
        if hit is None:
            hit = (adapters, *_concat(adapters, device, dtype, self.fused))  # keeps the adapters alive
            self._combos[key] = hit
            while len(self._combos) > self.max_combos:
                self._combos.popitem(last=False)
        self._combos.move_to_end(key)
        return key, hit

    def _owner_mask(self, row_adapters: list, adapters: list, col_owner: torch.Tensor, device, dtype) -> torch.Tensor:
        self.mask_builds += 1
        index = {id(a): i for i, a in enumerate(adapters)}
        row_owner = torch.tensor([index[id(a)] if a is not None else -1 for a in row_adapters], device=device)
        return (row_owner[:, None] == col_owner[None, :]).to(dtype)

    def set_rows(self, row_adapters: list[LoraAdapter | None], device, dtype) -> int:
        """row_adapters: one entry per token row. Returns the number of distinct adapters."""
        rows_key = tuple(id(a) if a is not None else 0 for a in row_adapters)
        last = self._last
        if last is not None and last[0] == rows_key:        # same composition as the last step
            _, (adapters, self.weights, _), self.mask, self._mask_rep = last
            return len(adapters)
        found = self._combo(row_adapters, device, dtype)
        if found is None:
            self.clear()
            return 0
        hit = found[1]
        adapters, self.weights, col_owner = hit
        self._mask_rep = {}
        if len(adapters) == 1 and all(a is not None for a in row_adapters):
            self.mask = None
        else:
            self.mask = self._owner_mask(row_adapters, adapters, col_owner, device, dtype)
        self._last = (rows_key, hit, self.mask, self._mask_rep)   # the dict fills as projections ask
        return len(adapters)

    def static_rows(self, row_adapters: list[LoraAdapter | None], device, dtype) -> tuple:
        """Fixed-shape form of `set_rows` for a decode step of len(row_adapters) rows (padding rows
        None): makes the batch's weights and mask current and returns (combo key, number of adapters,
        what a captured graph must keep alive). The mask buffer of (rows, combo) is updated in place."""
        found = self._combo(row_adapters, device, dtype)
        if found is None:
            self.clear()
            return (), 0, None
        key, hit = found
        adapters, self.weights, col_owner = hit
        n = len(row_adapters)
        rows_key = tuple(id(a) if a is not None else 0 for a in row_adapters)
        entry = self._static.get((n, key))
        if entry is None or entry[3] is not hit:
            mask = self._owner_mask(row_adapters, adapters, col_owner, device, dtype)
            reps = {k: mask.repeat(1, k) for k in {len(subs) for subs, _ in self.fused.values()} if k > 1}
            entry = self._static[(n, key)] = [rows_key, mask, reps, hit]
            while len(self._static) > 4 * self.max_combos:   # a graph that uses one keeps its own reference
                self._static.popitem(last=False)
        elif entry[0] != rows_key:
            mask = self._owner_mask(row_adapters, adapters, col_owner, device, dtype)
            entry[1].copy_(mask)
            for k, rep in entry[2].items():
                rep.copy_(mask.repeat(1, k))
            entry[0] = rows_key
        self._static.move_to_end((n, key))
        self.mask, self._mask_rep = entry[1], entry[2]
        return key, len(adapters), entry

    def forget_static(self) -> None:
        """Drop the static masks (their graphs are gone)."""
        self._static.clear()


def _concat(adapters: list[LoraAdapter], device, dtype, fused: dict) -> tuple[dict, torch.Tensor]:
    widths = [max(a_t.shape[1] for a_t, _ in a.weights.values()) for a in adapters]
    modules = sorted({m for a in adapters for m in a.weights})
    out = {}
    for m in modules:
        a_parts, b_parts = [], []
        shape = next(a.weights[m] for a in adapters if m in a.weights)
        d_in, d_out = shape[0].shape[0], shape[1].shape[1]
        for a, w in zip(adapters, widths):
            a_t = torch.zeros(d_in, w, dtype=dtype, device=device)
            b_t = torch.zeros(w, d_out, dtype=dtype, device=device)
            if m in a.weights:
                ai, bi = a.weights[m]
                a_t[:, : ai.shape[1]] = ai
                b_t[: bi.shape[0]] = bi
            a_parts.append(a_t)
            b_parts.append(b_t)
        out[m] = (torch.cat(a_parts, dim=1).contiguous(), torch.cat(b_parts, dim=0).contiguous())
    for name, (subs, sizes) in fused.items():   # [A_1 | A_2 | ...] and block-diagonal B
        if not any(sub in out for sub in subs):
            continue
        d_in = next(out[sub][0].shape[0] for sub in subs if sub in out)
        W = sum(widths)
        parts = [out.get(sub) or (torch.zeros(d_in, W, dtype=dtype, device=device),
                                  torch.zeros(W, size, dtype=dtype, device=device)) for sub, size in zip(subs, sizes)]
        out[name] = (torch.cat([a for a, _ in parts], dim=1).contiguous(), torch.block_diag(*[b for _, b in parts]))
    col_owner = torch.cat([torch.full((w,), i) for i, w in enumerate(widths)]).to(device)
    return out, col_owner


class MultiLoraLinear(nn.Module):
    """`base_layer(x)` plus each row's own adapter delta; x is [tokens, in] (the flat batch)."""

    def __init__(self, base_layer: nn.Linear, name: str, batch: LoraBatch):
        super().__init__()
        self.base_layer, self.name, self.batch = base_layer, name, batch

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.batch.add_delta(self.name, x, self.base_layer(x))


def wrap_linears(model: nn.Module, batch: LoraBatch, skip: tuple[str, ...] = ("lm_head",)) -> set[str]:
    """Replace every nn.Linear (except `skip`) by a MultiLoraLinear around it; returns their names."""
    names = [n for n, m in model.named_modules() if isinstance(m, nn.Linear) and n.split(".")[-1] not in skip]
    for name in names:
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        setattr(parent, child, MultiLoraLinear(getattr(parent, child), name, batch))
    return set(names)


@torch.inference_mode()
def merge_into(model: nn.Module, adapter: LoraAdapter) -> None:
    """Add `adapter`'s deltas to the base weights of `model` (whose Linears `wrap_linears` wrapped):
    W += (A^T B^T scale)^T, summed in float32 and rounded once to the weights' dtype. The model then
    answers as base + adapter with no per-row LoRA work (the fused q|k|v and gate|up weights change
    too: the base Linears' weights are views into them)."""
    for name, (a_t, b_t) in adapter.weights.items():
        w = model.get_submodule(name).base_layer.weight
        w.copy_((w.float() + (a_t.float() @ b_t.float()).T).to(w.dtype))

