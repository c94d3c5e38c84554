"""Export round-trips: peft folder, merged HF folder, GGUF (f16, q8_0) read back by transformers,
each compared with what the engine serves for the same adapter."""

from __future__ import annotations

import pytest
import torch

from openft.errors import InvalidRequest
from openft.serve.export import export_model
from openft.serve.types import GenerationRequest, SamplingParams
from tests.support.serving import collect, run

PROMPT = "The quick brown fox jumps over the lazy dog, then"


def served_prompt_logprobs(engine, adapter) -> tuple[list[int], torch.Tensor]:
    req = GenerationRequest(base_model="openft-tiny", adapter_path=adapter, adapter_key="ft:x", full_model_path=None,
                            messages=None, prompt=PROMPT,
                            params=SamplingParams(max_tokens=0, echo=True, logprobs=True, temperature=0))
    _, finishes, usage, items = run(collect(engine, req))
    echo = items[0]
    assert finishes[0] == "length" and usage.completion_tokens == 0
    return echo.token_ids, torch.tensor([lp["logprob"] for lp in echo.logprobs[1:]])


def logprobs_of(model, ids: list[int]) -> torch.Tensor:
    with torch.no_grad():
        logits = model(torch.tensor([ids])).logits[0].float()
    lp = torch.log_softmax(logits[:-1], dim=-1)
    return lp.gather(1, torch.tensor(ids[1:])[:, None])[:, 0]


@pytest.fixture
def served(engine_factory, adapters):
    return served_prompt_logprobs(engine_factory(), adapters[0])


def test_export_peft_and_merged_match_the_served_model(settings, adapters, tiny_model_dir, served, tmp_path,
                                                       engine_factory):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    ids, want = served
    out = export_model(settings, "openft-tiny", adapters[0], None, "peft", tmp_path / "peft")
    assert {"adapter_config.json", "adapter_model.safetensors"} <= {p.name for p in out.iterdir()}
    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    peft_model = PeftModel.from_pretrained(base, str(out)).eval()
    assert torch.allclose(logprobs_of(peft_model, ids), want, atol=1e-4)

    out = export_model(settings, "openft-tiny", adapters[0], None, "merged", tmp_path / "merged")
    merged = AutoModelForCausalLM.from_pretrained(str(out)).eval()      # transformers alone, no peft
    assert AutoTokenizer.from_pretrained(str(out))(PROMPT)["input_ids"] == ids
    assert torch.allclose(logprobs_of(merged, ids), want, atol=1e-4)
    base_lp = logprobs_of(AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32).eval(), ids)
    assert not torch.allclose(base_lp, want, atol=1e-2)                # the adapter is really in there

    # the merged folder served as a full model (full_model_path) gives the same distribution
    engine = engine_factory()
    req = GenerationRequest(base_model="openft-tiny", adapter_path=None, adapter_key="ft:full", full_model_path=str(out),
                            messages=None, prompt=PROMPT,
                            params=SamplingParams(max_tokens=0, echo=True, logprobs=True, temperature=0))
    echo = run(collect(engine, req))[3][0]
    assert torch.allclose(torch.tensor([lp["logprob"] for lp in echo.logprobs[1:]]), want, atol=1e-4)
    engine.evict("ft:full")
    assert f"full:{out}" not in engine.stats()["models"]


def test_export_gguf_metadata_and_weights(settings, adapters, tiny_model_dir, tmp_path):
    import gguf
    import numpy as np
    from transformers import AutoModelForCausalLM

    from openft.serve.gguf_export import _permute

    out = export_model(settings, "openft-tiny", adapters[0], None, "gguf", tmp_path / "g", gguf_types=("f16",))
    merged = export_model(settings, "openft-tiny", adapters[0], None, "merged", tmp_path / "m")
    state = AutoModelForCausalLM.from_pretrained(str(merged)).state_dict()
    reader = gguf.GGUFReader(str(out / "model-f16.gguf"))

    def field(k):
        return reader.fields[k].contents()

    assert field("general.architecture") == "llama" and field("llama.block_count") == 2
    assert field("llama.attention.head_count_kv") == 2 and field("tokenizer.ggml.model") == "gpt2"
    assert len(reader.fields["tokenizer.ggml.tokens"].data) == 49152 and field("tokenizer.ggml.eos_token_id") == 2
    assert "<|im_start|>" in field("tokenizer.chat_template")
    tensors = {t.name: np.asarray(t.data) for t in reader.tensors}
    assert "output.weight" not in tensors                                # tied embeddings, as llama.cpp expects
    q = state["model.layers.1.self_attn.q_proj.weight"].numpy()
    np.testing.assert_allclose(tensors["blk.1.attn_q.weight"].astype(np.float32), _permute(q, 4), atol=2e-3)
    v = state["model.layers.0.mlp.down_proj.weight"].numpy()             # merged: base + adapter
    np.testing.assert_allclose(tensors["blk.0.ffn_down.weight"].astype(np.float32), v, atol=2e-3)
    assert tensors["blk.0.attn_norm.weight"].dtype == np.float32


@pytest.mark.slow
def test_export_gguf_f16_and_q8_0_load_in_transformers(settings, adapters, served, tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    ids, want = served
    out = export_model(settings, "openft-tiny", adapters[0], None, "gguf", tmp_path / "gguf")
    assert {"model-f16.gguf", "model-q8_0.gguf", "Modelfile"} <= {p.name for p in out.iterdir()}
    modelfile = (out / "Modelfile").read_text()
    assert modelfile.startswith("FROM ./model-q8_0.gguf") and 'PARAMETER stop "<|im_end|>"' in modelfile
    assert not [p for p in out.iterdir() if p.name.startswith(".merged")]
    for name, tol in (("model-f16.gguf", 5e-3), ("model-q8_0.gguf", 0.1)):
        tok = AutoTokenizer.from_pretrained(str(out), gguf_file=name)
        assert tok(PROMPT)["input_ids"] == ids and tok.eos_token == "<|im_end|>" and tok.chat_template
        model = AutoModelForCausalLM.from_pretrained(str(out), gguf_file=name, dtype=torch.float32).eval()
        got = logprobs_of(model, ids)
        assert (got - want).abs().max() < tol, name


def test_export_errors_name_the_format(settings, tmp_path):
    with pytest.raises(InvalidRequest, match="merged") as err:
        export_model(settings, "openft-tiny", None, None, "peft", tmp_path / "x")
    assert err.value.param == "format"
    with pytest.raises(InvalidRequest, match="gguf"):
        export_model(settings, "openft-tiny", None, None, "onnx", tmp_path / "y")
