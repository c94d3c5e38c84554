"""The trainer's GPU options, as far as a CPU runs them: lora_sum policies, torch.compile of the
decoder layers (state_dict keys, saving), Liger (not applied off CUDA), the spec's new fields."""

from __future__ import annotations

import pytest
import torch

from openft.errors import InvalidRequest
from openft.train import model as train_model
from openft.train.model import build_model, compile_layers, pick_compile, pick_lora_sum
from openft.train.spec import TrainSpec

CPU = torch.device("cpu")


def test_spec_checks_the_new_fields():
    base = dict(train_file="t.jsonl", output_dir="o")
    TrainSpec(**base, lora_sum="fp32_cast", activation_checkpointing=True, compile=False).validate()
    for field, bad in (("lora_sum", "fp16"), ("activation_checkpointing", "yes"), ("compile", 1)):
        with pytest.raises(InvalidRequest) as e:
            TrainSpec(**base, **{field: bad}).validate()
        assert e.value.param == field


def test_auto_choices_by_device_and_precision():
    assert pick_lora_sum("auto", CPU, "fp32") == "fp32" and pick_lora_sum("bf16", CPU, "fp32") == "fp32"
    assert pick_lora_sum("auto", CPU, "bf16") == train_model.AUTO_LORA_SUM["cpu"]
    assert pick_lora_sum("auto", torch.device("cuda"), "bf16") == train_model.AUTO_LORA_SUM["cuda"]
    assert pick_lora_sum("fp32_cast", CPU, "bf16") == "fp32_cast"
    assert pick_compile("auto", CPU) is False and pick_compile(True, CPU) is True
    assert pick_compile("auto", torch.device("cuda")) is True


@pytest.mark.parametrize("lora_sum,out_dtype", [("fp32", torch.float32), ("fp32_cast", torch.bfloat16),
                                                ("bf16", torch.bfloat16)])
def test_lora_sum_policy_sets_what_a_layer_hands_on(tiny_model_dir, lora_sum, out_dtype):
    from peft.tuners.lora.layer import LoraLayer

    model = build_model(tiny_model_dir, method="lora", precision="bf16", device=CPU, lora_sum=lora_sum)
    layer = next(m for m in model.modules() if isinstance(m, LoraLayer))
    x = torch.randn(3, layer.base_layer.in_features)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        assert layer(x).dtype == out_dtype


def test_compiled_layers_keep_state_dict_keys_and_save_the_same_adapter(tiny_model_dir, tmp_path):
    torch.manual_seed(0)
    plain = build_model(tiny_model_dir, method="lora", precision="fp32", device=CPU)
    torch.manual_seed(0)
    compiled = build_model(tiny_model_dir, method="lora", precision="fp32", device=CPU, compile=True)
    assert compile_layers(plain) == plain.config.num_hidden_layers  # compiles in place
    assert list(compiled.state_dict()) == list(build_model(tiny_model_dir, method="lora", precision="fp32",
                                                           device=CPU).state_dict())
    compiled.save_pretrained(tmp_path / "a")
    from safetensors.torch import load_file

    keys = set(load_file(tmp_path / "a" / "adapter_model.safetensors"))
    assert keys and not any("_orig_mod" in k for k in keys)


def test_liger_is_not_applied_off_cuda_and_training_still_works(tiny_model_dir):
    from openft.data.encode import Encoded
    from openft.train.data import pack
    from openft.train.model import apply_liger, micro_batch_loss

    model = build_model(tiny_model_dir, method="lora", precision="fp32", device=CPU, liger=True)
    assert apply_liger(model, CPU) is False
    norm = next(m for m in model.modules() if type(m).__name__.endswith("RMSNorm"))
    assert "liger" not in norm.forward.__func__.__module__ and norm._get_name() == type(norm).__name__
    ids = torch.randint(5, 100, (12,)).tolist()
    ls, n, _ = micro_batch_loss(model, pack([Encoded(ids, [1] * 12)], None)[0], "fp32")
    ls.backward()
    assert n == 11 and torch.isfinite(ls)


@pytest.mark.slow  # inductor compiles each layer on CPU: tens of seconds
def test_a_compiled_run_checkpoints_and_resumes(tmp_path, model_cache):
    from openft.config import Settings
    from openft.train.hooks import RecordingHooks
    from openft.train.loop import train
    from tests.support.data import write_chat_jsonl

    settings = Settings(data_dir=tmp_path / "data", model_cache_dir=model_cache)
    spec = TrainSpec(base_model="openft-tiny", train_file=str(write_chat_jsonl(tmp_path / "t.jsonl", 8)),
                     output_dir=str(tmp_path / "out"), n_epochs=1, batch_size=2, precision="fp32", compile=True,
                     checkpoint_every_steps=2)
    hooks = RecordingHooks(pause_after=2)
    first = train(spec, hooks, settings)
    assert first.status == "paused"
    done = train(spec, RecordingHooks(), settings, resume_from=first.checkpoint_dir)
    assert done.status == "succeeded" and (tmp_path / "out" / "model" / "adapter_model.safetensors").exists()


def test_a_model_without_packed_attention_is_switched_to_sdpa_without_a_second_load(tiny_model_dir, monkeypatch):
    from transformers import AutoModelForCausalLM

    loads = []
    real = AutoModelForCausalLM.from_pretrained.__func__

    def counting(cls, *a, **k):
        loads.append(k.get("attn_implementation"))
        return real(cls, *a, **k)

    monkeypatch.setattr(AutoModelForCausalLM, "from_pretrained", classmethod(counting))
    monkeypatch.setattr(train_model, "_packed_attention_works", lambda model: False)
    model = build_model(tiny_model_dir, method="lora", precision="fp32", device=CPU)
    assert len(loads) == 1
    assert model.get_base_model().config._attn_implementation == "sdpa"
    rows = torch.tensor([[1, 2, 3, 1, 2]])
    with torch.no_grad():  # stock SDPA: packed rows are masked by transformers from the position ids
        model(input_ids=rows, position_ids=torch.tensor([[0, 1, 2, 0, 1]]))
