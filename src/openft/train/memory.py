"""How much memory a training run needs at its peak, what the device has, and what to do about it.

`estimate(shape, ...)` adds up, in bytes, for a (model, method, precision, packed tokens per row):
the frozen base weights; the trainable weights with their fp32 gradient and AdamW's two moments;
the activations one packed row saves for backward (the loop runs one row at a time and
accumulates gradients, so the batch size changes how many rows a step has, not the peak); and
the trained positions' logits in fp32 with their gradient. Activations are bytes per token per
layer times tokens times layers, with per-hidden-unit and per-MLP-unit factors measured on CPU by
summing the tensors autograd saves (tests/train/test_memory.py measures them again); with
activation checkpointing only each layer's input is kept, plus one layer's activations while
it is recomputed. The estimate is meant to be right within tens of percent, not exact: kernels'
workspace and the allocator's fragmentation come on top (`OVERHEAD`).

`plan(...)` compares the estimate with the device's free memory (torch.cuda.mem_get_info on
CUDA, psutil's available memory on CPU) and decides activation checkpointing: on when asked, on
for qlora (its point is a small peak), on when the run would not fit without it; `check_fits`
fails a run that cannot fit even with it, before the model is loaded. `oom_message` is the
message of a run that ran out of memory anyway.

Knows model configs and devices; nothing about jobs, files or HTTP.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from openft.errors import OpenFTError

GiB = 1024 ** 3
OVERHEAD = 1.15          # kernels' workspace, allocator fragmentation: on top of what tensors hold
FIXED = 256 * 1024 ** 2  # CUDA/cuBLAS handles and the like, once
MIN_FREE_FRACTION = 0.9  # checkpointing turns on when the estimate exceeds this much of the free memory
# bytes saved for backward per token per layer, per hidden unit and per MLP unit, for bf16 with the
# residual in fp32 (lora_sum fp32), bf16 throughout (lora_sum bf16 or fp32_cast) and fp32. Measured
# on CPU by summing the tensors autograd saves (Llama layout, all-linear LoRA, SDPA: no T^2 score
# matrix): openft-tiny (H 64, I 128) saves 62.4, 52.4 (46.4 with fp32_cast) and 68.4 bytes per
# hidden unit; the MLP share is an estimate of the I-sized tensors (gate, up, their product, the
# down projection's input) at each precision. With checkpointing: 5, 4 and 6 bytes per hidden unit.
ACT_FACTORS = {"bf16-fp32sum": (30.0, 16.0), "bf16": (34.0, 9.0), "fp32": (32.0, 18.0)}
CKPT_FACTORS = {"bf16-fp32sum": 5.0, "bf16": 4.0, "fp32": 6.0}


@dataclass(frozen=True)
class Shape:
    """What the estimate needs of a model: sizes from its config, parameters from its weights' headers."""
    n_params: int
    n_linear: int            # parameters of the linear layers LoRA "all-linear" adapts (not lm_head)
    lora_dims: int           # sum of (in + out) over those layers: LoRA parameters = r * lora_dims
    hidden: int
    intermediate: int
    layers: int
    vocab: int

    @classmethod
    def of(cls, model_dir: str) -> Shape:
        """From the folder's config and safetensors headers (no tensor is read; milliseconds), or
        a model built on the meta device when the weights are not safetensors."""
        import json
        from pathlib import Path

        cfg = json.loads((Path(model_dir) / "config.json").read_text())
        text = cfg.get("text_config") or cfg
        hidden = text["hidden_size"]
        sizes = dict(hidden=hidden, intermediate=text.get("intermediate_size") or 4 * hidden,
                     layers=text["num_hidden_layers"], vocab=text["vocab_size"])
        tensors = _safetensors_shapes(Path(model_dir))
        if tensors is None:
            return cls(**_meta_counts(model_dir), **sizes)
        # LoRA "all-linear": every 2-D weight inside a numbered block (embeddings and the head are not)
        linear = [shape for name, shape in tensors.items()
                  if len(shape) == 2 and name.endswith(".weight") and re.search(r"\.\d+\.", name)]
        n = 0
        for shape in tensors.values():
            k = 1
            for d in shape:
                k *= d
            n += k
        return cls(n_params=n, n_linear=sum(a * b for a, b in linear), lora_dims=sum(a + b for a, b in linear),
                   **sizes)


def _safetensors_shapes(folder) -> dict[str, list[int]] | None:
    from openft.models.registry import safetensors_header

    files = sorted(folder.glob("*.safetensors"))
    if not files:
        return None
    out: dict[str, list[int]] = {}
    for f in files:
        header = safetensors_header(f)
        if header is None:
            return None
        out.update({name: t["shape"] for name, t in header.items()})
    return out


def _meta_counts(model_dir: str) -> dict:
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(model_dir))
    head = model.get_output_embeddings()
    linears = [m for m in model.modules() if isinstance(m, torch.nn.Linear) and m is not head]
    return dict(n_params=sum(p.numel() for p in model.parameters()),
                n_linear=sum(m.weight.numel() for m in linears),
                lora_dims=sum(m.in_features + m.out_features for m in linears))


@dataclass(frozen=True)
class Estimate:
    weights: int
    trainable: int       # trainable weights + gradients + AdamW moments
    activations: int
    logits: int
    checkpointing: bool

    @property
    def total(self) -> int:
        return int((self.weights + self.trainable + self.activations + self.logits) * OVERHEAD) + FIXED

    def describe(self) -> str:
        def g(b):
            return f"{b / GiB:.2f}"
        return (f"{g(self.total)} GiB: weights {g(self.weights)}, trainable+optimizer {g(self.trainable)}, "
                f"activations {g(self.activations)}{' (checkpointed)' if self.checkpointing else ''}, "
                f"logits {g(self.logits)}")


def _key(precision: str, lora_sum: str) -> str:
    return "fp32" if precision != "bf16" else ("bf16-fp32sum" if lora_sum == "fp32" else "bf16")


def activation_bytes_per_token_layer(shape: Shape, precision: str, lora_sum: str,
                                     checkpointing: bool = False) -> float:
    """Bytes one token saves for backward in one decoder layer (with checkpointing: the layer's input)."""
    if checkpointing:
        return CKPT_FACTORS[_key(precision, lora_sum)] * shape.hidden
    per_h, per_i = ACT_FACTORS[_key(precision, lora_sum)]
    return per_h * shape.hidden + per_i * shape.intermediate


def estimate(shape: Shape, *, method: str, precision: str, tokens_per_row: int, lora_r: int = 16,
             lora_sum: str = "fp32", checkpointing: bool = False, trained_per_row: int | None = None) -> Estimate:
    """Peak bytes of one run (see the module doc). `trained_per_row`: trained positions of the
    largest row (their logits are materialized); None: all of them."""
    if method == "full":
        weights, trainable = 0, shape.n_params * 16  # fp32 weights, grads, two moments
    else:
        wbytes = 2 if precision == "bf16" or method == "qlora" else 4
        if method == "qlora":  # nf4: half a byte per linear weight (+ scales); PEFT's k-bit preparation
            # makes the rest (embeddings, norms, an untied head) fp32
            weights = int(shape.n_linear * 0.53) + (shape.n_params - shape.n_linear) * 4
        else:
            weights = shape.n_params * wbytes
        trainable = lora_r * shape.lora_dims * 16
    per_layer = activation_bytes_per_token_layer(shape, precision, lora_sum) * tokens_per_row
    if checkpointing:  # each layer's input, and one layer's activations while it is recomputed
        kept = activation_bytes_per_token_layer(shape, precision, lora_sum, checkpointing=True)
        acts = shape.layers * kept * tokens_per_row + per_layer
    else:
        acts = per_layer * shape.layers
    n_logits = tokens_per_row if trained_per_row is None else trained_per_row
    logits = n_logits * shape.vocab * (4 * 2 + (2 if precision == "bf16" else 0))  # fp32 + grad (+ bf16)
    return Estimate(int(weights), int(trainable), int(acts), int(logits), checkpointing)


def device_memory(device) -> tuple[int, int]:
    """(free, total) bytes of `device`: the GPU's (mem_get_info) or the host's available memory."""
    import torch

    if getattr(device, "type", device) == "cuda":
        free, total = torch.cuda.mem_get_info(device)
        return int(free), int(total)
    import psutil

    vm = psutil.virtual_memory()
    return int(vm.available), int(vm.total)


@dataclass(frozen=True)
class Plan:
    checkpointing: bool
    reason: str
    estimate: Estimate        # the chosen configuration's
    without: Estimate         # without checkpointing
    free: int
    total: int


def plan(shape: Shape, *, method: str, precision: str, tokens_per_row: int, requested="auto", lora_r: int = 16,
         lora_sum: str = "fp32", free: int, total: int, trained_per_row: int | None = None) -> Plan:
    """Activation checkpointing on or off, and why (see the module doc)."""
    kw = dict(method=method, precision=precision, tokens_per_row=tokens_per_row, lora_r=lora_r,
              lora_sum=lora_sum, trained_per_row=trained_per_row)
    off, on = estimate(shape, **kw), estimate(shape, checkpointing=True, **kw)
    room = f"{free / GiB:.1f} GiB free of {total / GiB:.1f} GiB"
    if requested is not True and requested is not False:
        if method == "qlora":
            ck, why = True, "qlora keeps the peak small"
        elif off.total > MIN_FREE_FRACTION * free:
            ck, why = True, f"the estimated peak without it, {off.total / GiB:.2f} GiB, does not fit in {room}"
        else:
            ck, why = False, f"the estimated peak, {off.total / GiB:.2f} GiB, fits in {room}"
    else:
        ck, why = bool(requested), "as requested"
    return Plan(ck, why, on if ck else off, off, free, total)


def is_oom(e: BaseException) -> bool:
    """torch's OutOfMemoryError (CUDA), MemoryError, or the CPU allocator's failure."""
    text = str(e).lower()
    return (isinstance(e, MemoryError) or type(e).__name__ == "OutOfMemoryError" or "out of memory" in text
            or "can't allocate memory" in text)


class OutOfMemory(OpenFTError):
    """A run that needs more memory than its device has."""

    def __init__(self, message: str):
        super().__init__(message, code="out_of_memory")


def advice(method: str, checkpointing: bool) -> str:
    tips = ["a smaller batch_size or pack_tokens (a packed row holds up to batch_size examples), or shorter "
            "examples (max_seq_len)"]
    if not checkpointing:
        tips.append("activation_checkpointing true")
    if method == "lora":
        tips.append("method qlora")
    return "try " + ", or ".join(tips)


def check_fits(p: Plan, method: str, device_type: str, margin: float = 1.5) -> None:
    """Fail before loading when the run clearly cannot fit: its smallest estimate exceeds the free
    memory by `margin` (the estimate is rough; a near miss is left to try)."""
    if p.estimate.total > margin * p.free:
        raise OutOfMemory(f"Training needs about {p.estimate.total / GiB:.1f} GiB ({p.estimate.describe()}), more "
                          f"than the {p.free / GiB:.1f} GiB free of {p.total / GiB:.1f} GiB on the "
                          f"{'GPU' if device_type == 'cuda' else 'host'}; {advice(method, p.checkpointing)}.")


def oom_message(p: Plan | None, method: str, device_type: str, free_total: tuple[int, int] | None) -> str:
    """The message of a run that ran out of memory: what it needed (the estimate) and had."""
    where = "GPU" if device_type == "cuda" else "host"
    need = f"needed about {p.estimate.total / GiB:.1f} GiB (estimate: {p.estimate.describe()})" if p else \
        "needed more than was free"
    had = ""
    if p:
        had = f", the {where} had {p.free / GiB:.1f} GiB free of {p.total / GiB:.1f} GiB when it started"
    elif free_total:
        had = f", the {where} has {free_total[0] / GiB:.1f} GiB free of {free_total[1] / GiB:.1f} GiB"
    return (f"Training ran out of {where} memory: {need}{had}; "
            f"{advice(method, p.checkpointing if p else False)}.")
