"""Build the model to train (base + LoRA, or all weights) and compute the masked loss.

Precision: with bf16 the frozen base weights are stored in bf16 and the forward pass runs
under bf16 autocast, while trainable weights (LoRA A/B, or all weights for `full`) and the
optimizer state stay fp32. Where a LoRA layer adds its update is `lora_sum`: "fp32" (the
default on every device) sums in fp32 and hands fp32 on, so the residual stream is fp32 from
the first layer; "bf16" is PEFT's sum under autocast; "fp32_cast" sums in fp32 and rounds back
to bf16. A bf16 residual stream rounds a young adapter's small update away (bf16 keeps 8 bits;
an update of 1e-3 of the output is mostly lost), and training then sees a blurred model.
Measured on CPU (SmolLM2-135M-Instruct, AR-LSAT+ConjNLI as chat, LoRA r 16 all-linear, batch 2,
auto learning rate, paired seeds; train loss by step):
    seed 42, steps 1-5    fp32 sum (a) 3.733 1.839 2.374 1.237 1.126
                          bf16 sum (b) 3.758 1.860 3.277 2.022 1.455
                          fp32 sum cast back (c) = (b) to 4 digits
                          full fp32 (d) 3.773 1.860 2.362 1.250 1.068
    seed 1, steps 1-5     (a) 7.723 2.097 1.796 0.952 0.916   (b) = (c) 7.669 2.513 2.836 1.494 1.000
                          (d) 7.766 2.141 1.823 0.976 0.898
    seed 42, 40 examples, 20 steps: steps 2-5 (a) 2.11 1.36 1.06 1.09, (b) 3.07 1.84 1.61 1.11,
                          (d) 2.14 1.34 1.05 1.08; mean of steps 11-20 (a) 0.710, (b) 0.727, (d) 0.705;
                          held-out loss after the run (16 examples) (a) 0.630, (b) 0.629, (d) 0.637
The bf16 residual stream (b, c: the same rounding) trains visibly worse for the first steps of a
young adapter (+0.4 to +0.9 nats at steps 2-4, both seeds) and catches up by about step 6;
the fp32 sum follows full fp32 throughout. So the fp32 sum stays the default on CUDA too
(AUTO_LORA_SUM); its memory (about a third more activations without checkpointing, 5 against 4
bytes per hidden unit with it) is met by activation checkpointing when a run would not fit
(openft.train.memory).

The loss projects only the trained positions through the output layer (the vocabulary
projection is the largest single matmul of a small model, and most positions of a chat example
are prompt); the cross-entropy is computed in fp32.

torch.compile (`compile`): each decoder layer is compiled in place with dynamic shapes; "auto"
turns it on for CUDA only. On CPU it does not pay (measured, same run, batch 2, bf16: the first
step 140 s with compile against 17 s without, the next two 14.7 and 11.5 s against 10.8 and
15.2 s: the packed attention's per-example split breaks the graph, and the matmuls dominate).

Knows nothing about files, data order or jobs.
"""

from __future__ import annotations

import contextlib
from pathlib import Path

import torch
import torch.nn.functional as F

from openft.train.data import MicroBatch

AUTO_LORA_SUM = {"cpu": "fp32", "cuda": "fp32"}  # precision bf16, lora_sum "auto"; see the module doc


def pick_device(requested: str) -> torch.device:
    if requested == "cuda" or (requested == "auto" and torch.cuda.is_available()):
        if not torch.cuda.is_available():
            from openft.errors import InvalidRequest

            raise InvalidRequest("device 'cuda' was requested but no CUDA GPU is available.", param="device")
        return torch.device("cuda")
    return torch.device("cpu")


def cpu_has_fast_bf16() -> bool:
    """AMX or AVX512-BF16 in the CPU flags (where bf16 matmuls beat fp32 several times over)."""
    try:
        flags = Path("/proc/cpuinfo").read_text().split("\nflags", 2)[1].split("\n", 1)[0].split()
    except (OSError, IndexError):
        return False
    return "amx_bf16" in flags or "avx512_bf16" in flags


def pick_precision(requested: str, device: torch.device) -> str:
    if requested != "auto":
        return requested
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp32"
    return "bf16" if cpu_has_fast_bf16() else "fp32"


def pick_lora_sum(requested: str, device: torch.device, precision: str) -> str:
    """Where a bf16 LoRA layer adds its update; "auto" by device (measured: see the module doc)."""
    if precision != "bf16":
        return "fp32"
    if requested != "auto":
        return requested
    return AUTO_LORA_SUM[device.type]


def pick_compile(requested, device: torch.device) -> bool:
    """torch.compile the decoder layers: on for CUDA, off on CPU (measured: see the module doc)."""
    return (device.type == "cuda" and hasattr(torch, "compile")) if requested == "auto" else bool(requested)


def autocast(device: torch.device, precision: str):
    if precision == "bf16":
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def build_model(base_dir: str, *, method: str, precision: str, device: torch.device, lora_r: int = 16,
                lora_alpha: int = 32, lora_dropout: float = 0.0, target_modules=("all-linear",),
                adapter_dir: str | None = None, full_weights_dir: str | None = None, lora_sum: str = "fp32",
                checkpointing: bool = False, compile: bool = False, liger: bool = False):
    """The trainable model on `device`; `adapter_dir` continues a LoRA adapter (resume or ft:),
    `full_weights_dir` a full-weights checkpoint. `lora_sum` (bf16 only): fp32, fp32_cast or
    bf16 (see the module doc); `checkpointing`: recompute each decoder layer's activations in
    backward; `compile`: torch.compile each decoder layer in place (state_dict keys unchanged);
    `liger`: Liger's RMSNorm/SwiGLU/RoPE kernels (CUDA, when liger-kernel is installed)."""
    from transformers import AutoModelForCausalLM

    from openft.train.attention import attention_for

    # CPU: per-example causal SDPA on packed rows; CUDA: one varlen kernel call (openft.train.attention)
    kw = {"attn_implementation": attention_for(device)}
    if method == "qlora":
        from transformers import BitsAndBytesConfig

        kw["quantization_config"] = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4",
                                                       bnb_4bit_compute_dtype=torch.bfloat16)
    if method == "qlora" or device.type == "cuda":
        kw["device_map"] = {"": device.index or 0}  # straight to the GPU: no host copy of the weights
    base_dtype = torch.bfloat16 if precision == "bf16" and method != "full" else torch.float32
    model = AutoModelForCausalLM.from_pretrained(full_weights_dir or base_dir, dtype=base_dtype, **kw)
    if kw["attn_implementation"] != "sdpa" and not _packed_attention_works(model):
        # stock path (transformers builds the block-diagonal mask): switched in place, not loaded again
        model.set_attn_implementation("sdpa")
    model.config.use_cache = False
    if liger:
        apply_liger(model, device)
    if method == "full":
        model.requires_grad_(True)
        model = model.to(device)
        return _finish(model, checkpointing, compile, peft=False)
    from peft import LoraConfig, PeftModel, get_peft_model

    if method == "qlora":
        from peft import prepare_model_for_kbit_training

        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=False)
    if adapter_dir:
        model = PeftModel.from_pretrained(model, adapter_dir, is_trainable=True)
    else:
        targets = "all-linear" if tuple(target_modules) == ("all-linear",) else list(target_modules)
        cfg = LoraConfig(r=lora_r, lora_alpha=lora_alpha, lora_dropout=lora_dropout, target_modules=targets,
                         task_type="CAUSAL_LM", bias="none")
        model = get_peft_model(model, cfg)
    for p in model.parameters():
        if p.requires_grad and p.dtype != torch.float32:
            p.data = p.data.float()
    if precision == "bf16" and lora_sum != "bf16":
        add_lora_updates_in_fp32(model, cast_back=lora_sum == "fp32_cast")
    model = model.to(device) if method != "qlora" else model
    return _finish(model, checkpointing, compile, peft=True)


def _finish(model, checkpointing: bool, compile: bool, *, peft: bool):
    if checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        if peft:
            model.enable_input_require_grads()  # the frozen embeddings' output must carry a grad
    if compile:
        compile_layers(model)
    return model


def decoder_layers(model) -> list:
    """The repeated blocks of a causal LM (PEFT-wrapped or not): the largest ModuleList."""
    lists = [m for m in model.modules() if isinstance(m, torch.nn.ModuleList)]
    return list(max(lists, key=len)) if lists else []


def compile_layers(model) -> int:
    """torch.compile every decoder layer in place (`Module.compile`: the module stays itself, so
    state_dict keys, PEFT saving and checkpoints are unchanged), with dynamic shapes (packed rows
    differ in length). Returns how many layers."""
    import torch._dynamo

    torch._dynamo.config.suppress_errors = True  # a graph inductor cannot compile runs eagerly, never fails the job
    layers = decoder_layers(model)
    for layer in layers:
        layer.compile(dynamic=True)
    return len(layers)


def apply_liger(model, device: torch.device) -> bool:
    """Liger's RMSNorm, SwiGLU and RoPE kernels on `model` (before PEFT wraps it), when
    liger-kernel is installed and the device is CUDA (Triton kernels). Never its (fused linear)
    cross-entropy: micro_batch_loss projects only the trained positions itself. True if applied."""
    import importlib.util

    if device.type != "cuda" or importlib.util.find_spec("liger_kernel") is None:
        return False
    from liger_kernel.transformers import _apply_liger_kernel_to_instance

    try:
        _apply_liger_kernel_to_instance(model=model, rope=True, rms_norm=True, swiglu=True, cross_entropy=False,
                                        fused_linear_cross_entropy=False)
    except (TypeError, ValueError, NotImplementedError):  # an architecture Liger does not know
        return False
    return True


def _lora_forward_fp32(self, x: torch.Tensor, *args, **kwargs) -> torch.Tensor:
    """base_layer(x) + scaling * B(A(dropout(x))), summed in fp32 and returned in fp32 (or, with
    `_openft_cast_back`, rounded back to the base layer's dtype)."""
    result = self.base_layer(x, *args, **kwargs)
    if self.disable_adapters or self.merged:
        return result
    dtype = result.dtype
    for name in self.active_adapters:
        if name in self.lora_A:
            delta = self.lora_B[name](self.lora_A[name](self.lora_dropout[name](x))) * self.scaling[name]
            result = result.float() + delta.float()
    return result.to(dtype) if self._openft_cast_back else result


def add_lora_updates_in_fp32(model, cast_back: bool = False) -> int:
    """Give every plain LoRA linear layer of a PEFT model the fp32-sum forward (see the module
    doc); `cast_back` rounds the sum back to the base layer's dtype. Layers with a LoRA variant
    (DoRA, ...) keep PEFT's own. Returns how many changed; the modules, their weights and the
    saved adapter are untouched."""
    import types

    from peft.tuners.lora.layer import LoraLayer

    n = 0
    for module in model.modules():
        if (isinstance(module, LoraLayer) and not module.lora_variant
                and isinstance(getattr(module, "base_layer", None), torch.nn.Linear)):
            module.forward = types.MethodType(_lora_forward_fp32, module)
            module._openft_cast_back = cast_back
            n += 1
    return n


def _packed_attention_works(model) -> bool:
    """Probe: does the model hand position_ids to its attention function (Llama, Qwen, ...)?"""
    from openft.train.attention import NotPackedAware

    dev = next(model.parameters()).device   # on CUDA the weights were loaded straight to the GPU
    ids = torch.tensor([[1, 2, 3, 1, 2]], device=dev)
    try:
        with torch.no_grad():
            model(input_ids=ids, position_ids=torch.tensor([[0, 1, 2, 0, 1]], device=dev), use_cache=False)
    except NotPackedAware:
        return False
    return True


def _fast_path_ok(causal_lm) -> bool:
    """Our own head projection matches the model's forward unless it rescales logits."""
    cfg = causal_lm.config
    return not any(getattr(cfg, a, None) not in (None, 1.0, 1) for a in
                   ("final_logit_softcapping", "logit_scale", "logits_scaling", "output_multiplier_scale"))


def micro_batch_loss(model, mb: MicroBatch, precision: str) -> tuple[torch.Tensor, int, torch.Tensor]:
    """(sum of token losses over trained positions, trained tokens, correct argmax predictions):
    the sums stay 0-d tensors on the device, so a step reads them back once, not per micro-batch."""
    loss_sum, n, correct, _ = micro_batch_stats(model, mb, precision)
    return loss_sum, n, correct


def micro_batch_stats(model, mb: MicroBatch, precision: str) -> tuple[torch.Tensor, int, torch.Tensor, torch.Tensor]:
    """micro_batch_loss's three, then how many of the row's examples have every trained token
    predicted right (a 0-d tensor on the device too)."""
    from openft.train.attention import row_kwargs

    causal_lm = model.get_base_model() if hasattr(model, "get_base_model") else model
    idx = mb.target_index                      # (n,) positions t whose target t+1 is trained (host-known n)
    n = mb.n_trained
    if n == 0:
        zero = torch.zeros((), device=mb.input_ids.device)
        return zero, 0, zero.long(), zero.long()
    extra = row_kwargs(model, mb)              # example boundaries / block mask for the attention kernel
    with autocast(mb.input_ids.device, precision):
        if _fast_path_ok(causal_lm):
            hidden = causal_lm.get_decoder()(input_ids=mb.input_ids, position_ids=mb.position_ids,
                                             use_cache=False, **extra).last_hidden_state   # (1, T, H)
            logits = causal_lm.get_output_embeddings()(hidden[0].index_select(0, idx))  # (n, V)
        else:
            logits = causal_lm(input_ids=mb.input_ids, position_ids=mb.position_ids,
                               use_cache=False, **extra).logits[0].index_select(0, idx)
    logits = logits.float()
    y = mb.labels[0].index_select(0, idx + 1)
    loss_sum = F.cross_entropy(logits, y, reduction="sum")
    hits = logits.detach().argmax(-1) == y                                     # (n,)
    return loss_sum, n, hits.sum(), sequences_right(mb, hits)


def sequences_right(mb: MicroBatch, hits: torch.Tensor) -> torch.Tensor:
    """How many of the row's examples have every trained token right (`hits`: per trained target,
    in target_index order), as a 0-d tensor on the device (no read-back)."""
    example = torch.bucketize(mb.target_index + 1, mb.cu_seqlens[1:].long(), right=True)  # (n,) example of each
    wrong = torch.zeros(mb.n_examples, dtype=torch.long, device=hits.device).index_add_(0, example, (~hits).long())
    return (wrong == 0).sum()


@torch.no_grad()
def evaluate(model, batches: list[MicroBatch], precision: str, device) -> tuple[float, float, float]:
    """(mean token loss, mean token accuracy, sequence accuracy) over the trained tokens and the
    examples of `batches`."""
    was_training = model.training
    model.eval()
    total, n, correct, right, seqs = 0.0, 0, 0, 0, 0
    for mb in batches:
        ls, k, c, r = micro_batch_stats(model, mb.to(device), precision)
        total, n, correct, right, seqs = total + ls, n + k, correct + c, right + r, seqs + mb.n_examples
    model.train(was_training)
    return float(total) / max(n, 1), int(correct) / max(n, 1), int(right) / max(seqs, 1)
