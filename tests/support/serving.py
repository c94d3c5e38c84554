"""Serving helpers for the tests: random PEFT adapters (non-zero, so they change the output), running
a coroutine to the end and collecting every item of one generation request.

Knows peft, transformers and the engine's item types; nothing about HTTP.
"""

from __future__ import annotations

import asyncio


def make_adapter(base_dir: str, out_dir, seed: int, r: int = 4, targets=("q_proj", "k_proj", "v_proj", "o_proj",
                                                                         "gate_proj", "up_proj", "down_proj")) -> str:
    """A PEFT LoRA folder with random (non-zero) A and B, so the adapter changes the output."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_pretrained(base_dir, dtype=torch.float32)
    cfg = LoraConfig(r=r, lora_alpha=2 * r, target_modules=list(targets), init_lora_weights=False, task_type="CAUSAL_LM")
    peft_model = get_peft_model(model, cfg)
    peft_model.save_pretrained(str(out_dir))
    return str(out_dir)


def run(coro):
    return asyncio.run(coro)


async def collect(engine, req):
    """All items of one request: (texts by index, finishes by index, usage, items)."""
    from openft.serve.types import Delta, Finish, Usage

    texts, finishes, usage, items = {}, {}, None, []
    async for it in engine.generate(req):
        items.append(it)
        if isinstance(it, Delta):
            texts[it.index] = texts.get(it.index, "") + it.text
        elif isinstance(it, Finish):
            finishes[it.index] = it.finish_reason
        elif isinstance(it, Usage):
            usage = it
    return texts, finishes, usage, items
