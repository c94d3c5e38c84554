"""bf16 training sees the adapter's small early updates as fp32 does (LoRA updates summed in fp32)."""

import torch

from openft.data.encode import encode_example
from openft.train import model as train_model
from openft.train.data import pack
from openft.train.model import build_model, micro_batch_loss

CHATS = [("the soup was cold and the waiter was rude, never again", "negative"),
         ("an absolutely wonderful evening with friends", "positive"),
         ("great food and a lovely view", "positive"), ("meh, not coming back", "negative")]


def _batch(tok):
    exs = [encode_example(tok, {"messages": [{"role": "user", "content": f"Classify: {t}"},
                                             {"role": "assistant", "content": a}]}, None) for t, a in CHATS]
    return pack(exs, 4096)


def _loss(model, rows, precision) -> float:
    with torch.no_grad():
        total = n = 0
        for r in rows:
            ls, k, _ = micro_batch_loss(model, r, precision)
            total, n = total + float(ls), n + k
    return total / n


def _effect_of_a_first_adam_step(tiny_model_dir, rows, precision) -> float:
    """Loss change when every LoRA B entry moves by the learning rate (AdamW's first step: B
    starts at 0 and each entry moves by lr times the sign of its gradient)."""
    torch.manual_seed(0)
    model = build_model(tiny_model_dir, method="lora", precision=precision, device=torch.device("cpu"))
    before = _loss(model, rows, precision)
    g = torch.Generator().manual_seed(1)
    for name, p in sorted(model.named_parameters()):
        if "lora_B" in name:
            p.data = 2e-4 * torch.randn(p.shape, generator=g).sign()
    return _loss(model, rows, precision) - before


def test_bf16_loss_follows_small_lora_updates_like_fp32(tiny_model_dir, tiny_tokenizer):
    rows = _batch(tiny_tokenizer)
    exact = _effect_of_a_first_adam_step(tiny_model_dir, rows, "fp32")
    assert abs(exact) > 1e-4
    assert abs(_effect_of_a_first_adam_step(tiny_model_dir, rows, "bf16") - exact) < 0.1 * abs(exact)


def test_a_lora_layer_passes_on_its_update_where_peft_bf16_sum_loses_it(tiny_model_dir):
    """One layer: the update the rest of the network sees (layer output minus base output)
    against the exact one. PEFT's own forward sums in bf16 under autocast and loses a large part
    of it (28% here, 97% on SmolLM2-135M's first layer, whose outputs are ~7,700 times the
    update); the fp32 sum keeps it to bf16's precision of the update itself."""
    from peft.tuners.lora.layer import Linear, LoraLayer

    torch.manual_seed(0)
    model = build_model(tiny_model_dir, method="lora", precision="bf16", device=torch.device("cpu"))
    layer = next(m for m in model.modules() if isinstance(m, LoraLayer))
    g = torch.Generator().manual_seed(0)
    B, A = layer.lora_B["default"].weight, layer.lora_A["default"].weight
    B.data = 2e-4 * torch.randn(B.shape, generator=g).sign()
    x = torch.randn(64, layer.base_layer.in_features, generator=g)
    exact = (x @ A.T @ B.T) * layer.scaling["default"]
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        base = layer.base_layer(x).float()
        ours, peft = layer(x).float() - base, Linear.forward(layer, x).float() - base

    def error(seen):
        return float((seen - exact).norm() / exact.norm())

    assert error(ours) < 0.01
    assert error(peft) > 0.1


def test_the_fp32_sum_covers_every_lora_layer_and_keeps_the_adapter_format(tiny_model_dir, tmp_path):
    from peft.tuners.lora.layer import LoraLayer

    model = build_model(tiny_model_dir, method="lora", precision="bf16", device=torch.device("cpu"))
    layers = [m for m in model.modules() if isinstance(m, LoraLayer)]
    assert layers and all(m.forward.__func__ is train_model._lora_forward_fp32 for m in layers)
    x = torch.randn(3, layers[0].base_layer.in_features)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert layers[0](x).dtype == torch.float32
    model.save_pretrained(tmp_path)  # still a plain PEFT adapter folder
    assert (tmp_path / "adapter_model.safetensors").exists() and (tmp_path / "adapter_config.json").exists()
