"""LoRA and QLoRA training on CUDA: both losses fall, and QLoRA's peak (activation checkpointing on
by default, 4-bit weights) is at most half of LoRA's on the same workload. Needs a CUDA GPU and
bitsandbytes; skips with the reason otherwise. Also: the Liger kernels go in on CUDA when installed."""

from __future__ import annotations

import importlib.util

import pytest
import torch

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (torch.cuda.is_available() is False)"),
]

ROWS, T = 4, 2048


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory, tiny_model_dir):
    """A random-weight Llama of a real width (speed and memory do not depend on the values)."""
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    cfg = LlamaConfig(hidden_size=1024, intermediate_size=4096, num_hidden_layers=8, num_attention_heads=16,
                      num_key_value_heads=16, vocab_size=len(tok), max_position_embeddings=4096,
                      tie_word_embeddings=True)
    torch.manual_seed(0)
    out = tmp_path_factory.mktemp("gpu-model")
    LlamaForCausalLM(cfg).to(torch.bfloat16).save_pretrained(out)
    tok.save_pretrained(out)
    return str(out)


def _train(model_dir: str, method: str, steps: int = 8, checkpointing=None) -> tuple[list[float], int, bool]:
    """(losses, peak bytes allocated, checkpointing chosen) of `steps` steps on the same rows;
    `checkpointing` None: the memory plan's choice, as the trainer makes it."""
    from openft.data.encode import Encoded
    from openft.train import memory
    from openft.train.data import pack
    from openft.train.model import build_model, micro_batch_loss

    device = torch.device("cuda")
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats()
    free, total = memory.device_memory(device)
    plan = memory.plan(memory.Shape.of(model_dir), method=method, precision="bf16", tokens_per_row=T,
                       free=free, total=total, requested="auto" if checkpointing is None else checkpointing)
    torch.manual_seed(0)
    model = build_model(model_dir, method=method, precision="bf16", device=device, checkpointing=plan.checkpointing)
    model.train()
    g = torch.Generator().manual_seed(0)
    rows = []
    for _ in range(ROWS):
        ids = torch.randint(5, 1000, (T,), generator=g).tolist()
        rows.append(pack([Encoded(ids, [0] * (T // 2) + [1] * (T - T // 2))], None)[0].to(device))
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-3)
    losses = []
    for _ in range(steps):
        total_loss, n_all = 0.0, 0
        for mb in rows:
            ls, n, _ = micro_batch_loss(model, mb, "bf16")
            (ls / (ROWS * T // 2)).backward()
            total_loss, n_all = total_loss + float(ls), n_all + n
        opt.step()
        opt.zero_grad(set_to_none=True)
        losses.append(total_loss / n_all)
    peak = torch.cuda.max_memory_allocated()
    del model, opt, params
    torch.cuda.empty_cache()
    return losses, peak, plan.checkpointing


@pytest.mark.skipif(importlib.util.find_spec("bitsandbytes") is None, reason="qlora needs the bitsandbytes package")
def test_qlora_trains_in_at_most_half_of_loras_peak_memory(model_dir):
    lora_losses, lora_peak, lora_ck = _train(model_dir, "lora")
    qlora_losses, qlora_peak, qlora_ck = _train(model_dir, "qlora")
    assert qlora_ck, "qlora turns activation checkpointing on by default"
    assert lora_losses[-1] < lora_losses[0] - 0.1, lora_losses
    assert qlora_losses[-1] < qlora_losses[0] - 0.1, qlora_losses
    assert qlora_peak <= 0.5 * lora_peak, (qlora_peak / 2**30, lora_peak / 2**30)


def test_the_estimate_is_near_the_measured_peak(model_dir):
    from openft.train import memory

    for ck in (False, True):
        _, peak, _ = _train(model_dir, "lora", steps=2, checkpointing=ck)
        est = memory.estimate(memory.Shape.of(model_dir), method="lora", precision="bf16", tokens_per_row=T,
                              checkpointing=ck, trained_per_row=T // 2).total
        assert 0.6 < est / peak < 1.6, (ck, est / 2**30, peak / 2**30)


@pytest.mark.skipif(importlib.util.find_spec("liger_kernel") is None, reason="needs liger-kernel (the liger extra)")
def test_liger_kernels_go_in_on_cuda_and_training_works(model_dir):
    from openft.train.model import build_model

    model = build_model(model_dir, method="lora", precision="bf16", device=torch.device("cuda"), liger=True)
    norm = next(m for m in model.modules() if type(m).__name__.endswith("RMSNorm"))
    assert "liger" in type(norm).forward.__module__.lower() or "liger" in norm.forward.__func__.__module__.lower()
    losses, _, _ = _train(model_dir, "lora", steps=4)
    assert losses[-1] < losses[0]
