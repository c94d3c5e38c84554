"""Build the model to train (base + LoRA, or all weights) and compute the masked loss.

Precision: with bf16 the frozen base weights are stored in bf16 and the forward pass runs
under bf16 autocast, while trainable weights (LoRA A/B, or all weights for `full`) and the
optimizer state stay fp32. Each LoRA layer adds its update to the base layer's output in fp32
and hands fp32 on, so the residual stream is fp32 from the first layer: a bf16 sum (PEFT's,
under autocast) rounds a young adapter's small update away (bf16 keeps 8 bits; an update of
1e-3 of the output is mostly lost), and training then sees a blurred model (measured: loss
after the first step 1.94 with the bf16 sum, 1.02 with the fp32 sum, 1.005 in full fp32).
The loss projects only the trained positions through the output layer (the vocabulary
projection is the largest single matmul of a small model, and most positions of a chat
example are prompt); the cross-entropy is computed in fp32.

Knows nothing about files, data order or jobs.
"""

from __future__ import annotations

import contextlib
from pathlib import Path

import torch
import torch.nn.functional as F

from openft.train.data import MicroBatch


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


def autocast(device: torch.device, precision: str):
    if precision == "bf16":
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def build_model(base_dir: str, *, method: str, precision: str, device: torch.device, lora_r: int = 16,
                lora_alpha: int = 32, lora_dropout: float = 0.0, target_modules=("all-linear",),
                adapter_dir: str | None = None, full_weights_dir: str | None = None):
    """The trainable model on `device`; `adapter_dir` continues a LoRA adapter (resume or ft:),
    `full_weights_dir` a full-weights checkpoint."""
    from transformers import AutoModelForCausalLM

    from openft.train.attention import attention_for

    # CPU: per-example causal SDPA on packed rows; CUDA: one varlen kernel call (openft.train.attention)
    kw = {"attn_implementation": attention_for(device)}
    if method == "qlora":
        from transformers import BitsAndBytesConfig

        kw["quantization_config"] = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4",
                                                       bnb_4bit_compute_dtype=torch.bfloat16)
        kw["device_map"] = {"": device.index or 0}
    base_dtype = torch.bfloat16 if precision == "bf16" and method != "full" else torch.float32
    model = AutoModelForCausalLM.from_pretrained(full_weights_dir or base_dir, dtype=base_dtype, **kw)
    if kw["attn_implementation"] != "sdpa" and not _packed_attention_works(model):
        kw["attn_implementation"] = "sdpa"  # stock path: transformers builds the block-diagonal mask
        model = AutoModelForCausalLM.from_pretrained(full_weights_dir or base_dir, dtype=base_dtype, **kw)
    model.config.use_cache = False
    if method == "full":
        model.requires_grad_(True)
        return model.to(device)
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
    if precision == "bf16":
        add_lora_updates_in_fp32(model)
    return model.to(device) if method != "qlora" else model


def _lora_forward_fp32(self, x: torch.Tensor, *args, **kwargs) -> torch.Tensor:
    """base_layer(x) + scaling * B(A(dropout(x))), summed and returned in fp32."""
    result = self.base_layer(x, *args, **kwargs)
    if self.disable_adapters or self.merged:
        return result
    for name in self.active_adapters:
        if name in self.lora_A:
            delta = self.lora_B[name](self.lora_A[name](self.lora_dropout[name](x))) * self.scaling[name]
            result = result.float() + delta.float()
    return result


def add_lora_updates_in_fp32(model) -> int:
    """Give every plain LoRA linear layer of a PEFT model the fp32-sum forward (see the module
    doc). Layers with a LoRA variant (DoRA, ...) keep PEFT's own. Returns how many changed;
    the modules, their weights and the saved adapter are untouched."""
    import types

    from peft.tuners.lora.layer import LoraLayer

    n = 0
    for module in model.modules():
        if (isinstance(module, LoraLayer) and not module.lora_variant
                and isinstance(getattr(module, "base_layer", None), torch.nn.Linear)):
            module.forward = types.MethodType(_lora_forward_fp32, module)
            n += 1
    return n


def _packed_attention_works(model) -> bool:
    """Probe: does the model hand position_ids to its attention function (Llama, Qwen, ...)?"""
    from openft.train.attention import NotPackedAware

    ids = torch.tensor([[1, 2, 3, 1, 2]])
    try:
        with torch.no_grad():
            model(input_ids=ids, position_ids=torch.tensor([[0, 1, 2, 0, 1]]), use_cache=False)
    except NotPackedAware:
        return False
    return True


def _fast_path_ok(causal_lm) -> bool:
    """Our own head projection matches the model's forward unless it rescales logits."""
    cfg = causal_lm.config
    return not any(getattr(cfg, a, None) not in (None, 1.0, 1) for a in
                   ("final_logit_softcapping", "logit_scale", "logits_scaling", "output_multiplier_scale"))


def micro_batch_loss(model, mb: MicroBatch, precision: str) -> tuple[torch.Tensor, int, int]:
    """(sum of token losses over trained positions, trained tokens, correct argmax predictions)."""
    from openft.train.attention import row_kwargs

    causal_lm = model.get_base_model() if hasattr(model, "get_base_model") else model
    idx = mb.target_index                      # (n,) positions t whose target t+1 is trained (host-known n)
    n = mb.n_trained
    if n == 0:
        return torch.zeros((), device=mb.input_ids.device), 0, 0
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
    correct = int((logits.detach().argmax(-1) == y).sum())
    return loss_sum, n, correct


@torch.no_grad()
def evaluate(model, batches: list[MicroBatch], precision: str, device) -> tuple[float, float]:
    """(mean token loss, mean token accuracy) over the trained tokens of `batches`."""
    was_training = model.training
    model.eval()
    total, n, correct = 0.0, 0, 0
    for mb in batches:
        ls, k, c = micro_batch_loss(model, mb.to(device), precision)
        total, n, correct = total + float(ls), n + k, correct + c
    model.train(was_training)
    return total / max(n, 1), correct / max(n, 1)
