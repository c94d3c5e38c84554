"""The general runner (serve/general.py) through the engine, on tiny models of architectures the
fast runner does not compute: Qwen3 (q/k norms), Gemma2 (sliding-window layers, soft-capping),
Phi3 (fused qkv_proj / gate_up_proj). Greedy output equals transformers' `generate` while
requests of different lengths share forwards; n, stop strings, logprobs, echo; per-row LoRA
beside the base in one batch equals PEFT's merged model; and the choice of runner class."""

from __future__ import annotations

import asyncio

import pytest
import torch

from openft.serve.types import Delta, GenerationRequest, SamplingParams
from tests.support.serving import collect, make_adapter, run

QUESTIONS = ["Hi", "Write a short poem about the sea, with rhymes.",
             "What is the capital of France? Answer in one word, then explain why in two sentences."]
ADAPTER_TARGETS = {"qwen3": ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"),
                   "phi3": ("qkv_proj", "o_proj", "gate_up_proj", "down_proj")}


@pytest.fixture(scope="module")
def arch_dirs(model_cache):
    from openft.config import Settings
    from openft.models.registry import tiny_model

    s = Settings(model_cache_dir=model_cache)
    return {t: tiny_model(s, t) for t in ("qwen3", "gemma2", "phi3")}


@pytest.fixture
def arch(settings, arch_dirs):
    """Registers the tiny models under their type's name in this test's data folder."""
    from openft.models import register_local

    for t, folder in arch_dirs.items():
        register_local(settings, f"tiny-{t}", folder)
    return arch_dirs


def request(model, messages=None, prompt=None, adapter=None, **params) -> GenerationRequest:
    return GenerationRequest(base_model=model, adapter_path=adapter, adapter_key=adapter, full_model_path=None,
                             messages=messages, prompt=prompt, params=SamplingParams(**params))


def chat_ids(tok, question) -> list[int]:
    text = tok.apply_chat_template([{"role": "user", "content": question}], add_generation_prompt=True, tokenize=False)
    return tok(text, add_special_tokens=False)["input_ids"]


def hf_greedy(model, ids, n_new, eos) -> list[int]:
    with torch.no_grad():
        out = model.generate(torch.tensor([ids]), attention_mask=torch.ones(1, len(ids), dtype=torch.long),
                             max_new_tokens=n_new, do_sample=False, pad_token_id=0)
    new = out[0, len(ids):].tolist()
    for i, t in enumerate(new):
        if t in eos:
            return new[:i]
    return new


def token_ids(items, index=0) -> list[int]:
    return [t for it in items if isinstance(it, Delta) and it.index == index for t in it.token_ids]


def load(folder, adapter=None):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32)
    if adapter:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, adapter).merge_and_unload()
    return model.eval()


def test_runner_choice_fast_for_known_layouts_general_for_the_rest(tiny_model_dir, arch_dirs, model_cache):
    from transformers import MistralConfig, Qwen2Config

    from openft.config import Settings
    from openft.models.registry import tiny_model
    from openft.serve.general import GeneralRunner, build_runner, fast_path_serves
    from openft.serve.model_runner import ModelRunner

    kw = {"device": "cpu", "dtype": torch.float32}
    assert type(build_runner(tiny_model_dir, name="llama", **kw)) is ModelRunner
    assert type(build_runner(tiny_model(Settings(model_cache_dir=model_cache), "qwen2"), name="q2", **kw)) is ModelRunner
    for t, folder in arch_dirs.items():
        assert type(build_runner(folder, name=t, **kw)) is GeneralRunner
    # model_runner.py attends to the whole context: a sliding window goes to the general runner
    assert fast_path_serves(Qwen2Config()) and not fast_path_serves(Qwen2Config(use_sliding_window=True, sliding_window=64))
    assert fast_path_serves(MistralConfig(sliding_window=None))
    assert not fast_path_serves(MistralConfig(sliding_window=4096, max_position_embeddings=32768))


@pytest.mark.parametrize("arch_type", ["qwen3", "gemma2", "phi3"])
def test_greedy_equals_generate_with_concurrent_requests(engine_factory, arch, arch_type):
    engine = engine_factory()
    model = f"tiny-{arch_type}"
    lengths = [14, 6, 20]

    async def main():
        return await asyncio.gather(*[collect(engine, request(model, [{"role": "user", "content": q}],
                                                              max_tokens=n, temperature=0))
                                      for q, n in zip(QUESTIONS, lengths)])

    results = run(main())
    runner = engine._runners[model]
    assert type(runner).__name__ == "GeneralRunner" and runner.peak_rows == 3
    ref = load(arch[arch_type])
    outs = []
    for q, n, (_, _finishes, usage, items) in zip(QUESTIONS, lengths, results):
        ids = chat_ids(runner.tokenizer, q)
        want = hf_greedy(ref, ids, n, runner.eos_ids)
        assert token_ids(items) == want and len(want) > 3
        assert usage.prompt_tokens == len(ids) and usage.completion_tokens == n
        outs.append(want)
    assert len({tuple(o) for o in outs}) == 3
    if arch_type == "qwen3":    # every cache layer is a DynamicLayer: the decode rows shared forwards
        assert runner.steps < sum(lengths) + len(lengths)



def test_rows_of_equal_length_share_forwards_past_the_sliding_window(engine_factory, arch):
    """Gemma2's cache has sliding-window layers (window 8, shorter than the prompt): rows of equal
    length (n=3 of one prompt) decode in one forward each step and still equal generate."""
    engine = engine_factory()
    msg = [{"role": "user", "content": QUESTIONS[2]}]
    _, finishes, _, items = run(collect(engine, request("tiny-gemma2", msg, max_tokens=12, temperature=0, n=3)))
    runner = engine._runners["tiny-gemma2"]
    ids = chat_ids(runner.tokenizer, msg[0]["content"])
    assert len(ids) > 8
    want = hf_greedy(load(arch["gemma2"]), ids, 12, runner.eos_ids)
    assert [token_ids(items, i) for i in range(3)] == [want] * 3 and len(want) == 12
    assert finishes == {0: "length", 1: "length", 2: "length"}
    assert runner.steps == 3 + 11   # three prompt forwards, then one forward per step for all three

def test_n_stop_logprobs_and_echo(engine_factory, arch):
    engine = engine_factory()
    model, msg = "tiny-qwen3", [{"role": "user", "content": QUESTIONS[1]}]
    texts, finishes, usage, items = run(collect(engine, request(model, msg, max_tokens=8, temperature=1.0, seed=7,
                                                                n=3, logprobs=True, top_logprobs=3)))
    assert sorted(finishes) == [0, 1, 2] and len(set(texts.values())) == 3
    for i in range(3):
        lps = [lp for it in items if isinstance(it, Delta) and it.index == i for lp in it.logprobs]
        assert len(lps) == len(token_ids(items, i)) > 0
        assert all(lp["logprob"] <= 0 and len(lp["top_logprobs"]) == 3 for lp in lps)
        assert "".join(lp["token"] for lp in lps) == texts[i]

    greedy = run(collect(engine, request(model, msg, max_tokens=16, temperature=0)))[0][0]
    stop = greedy[len(greedy) // 2: len(greedy) // 2 + 3]
    assert stop.strip() and len(greedy) > 8
    texts, finishes, _, _ = run(collect(engine, request(model, msg, max_tokens=16, temperature=0, stop=[stop])))
    assert finishes[0] == "stop" and texts[0] == greedy[: greedy.index(stop)]

    prompt = "The quick brown fox jumps over"
    texts, _, _, items = run(collect(engine, request(model, prompt=prompt, max_tokens=3, temperature=0,
                                                         echo=True, logprobs=True, top_logprobs=2)))
    first = items[0]
    runner = engine._runners[model]
    ids = runner.tokenizer(prompt)["input_ids"]
    assert first.text == prompt and first.token_ids == ids and texts[0].startswith(prompt)
    with torch.no_grad():   # the echoed prompt logprobs are the model's own
        want = torch.log_softmax(load(arch["qwen3"])(torch.tensor([ids])).logits[0].float(), -1)
    assert first.logprobs[0]["logprob"] is None
    for j in range(1, len(ids)):
        assert first.logprobs[j]["logprob"] == pytest.approx(float(want[j - 1, ids[j]]), abs=1e-4)


@pytest.fixture(scope="module")
def arch_adapters(arch_dirs, tmp_path_factory):
    root = tmp_path_factory.mktemp("arch-adapters")
    return {t: [make_adapter(arch_dirs[t], root / f"{t}-{i}", seed=200 + i, targets=ADAPTER_TARGETS[t])
                for i in range(2)] for t in ADAPTER_TARGETS}


@pytest.mark.parametrize("arch_type", list(ADAPTER_TARGETS))
def test_per_row_lora_beside_the_base_equals_peft_merged(engine_factory, arch, arch_adapters, arch_type):
    engine = engine_factory()
    model, (a0, a1) = f"tiny-{arch_type}", arch_adapters[arch_type]
    choices = [None, a0, a1, a0]
    questions = [QUESTIONS[1], QUESTIONS[2], QUESTIONS[1], QUESTIONS[0]]

    async def main():
        return await asyncio.gather(*[collect(engine, request(model, [{"role": "user", "content": q}], adapter=a,
                                                              max_tokens=10, temperature=0))
                                      for q, a in zip(questions, choices)])

    results = run(main())
    runner = engine._runners[model]
    assert runner.peak_adapters >= 2 and runner.peak_rows == 4   # base and both adapters in one forward
    refs = {a: load(arch[arch_type], a) for a in set(choices)}
    wants = []
    for q, a, (_, _, _, items) in zip(questions, choices, results):
        want = hf_greedy(refs[a], chat_ids(runner.tokenizer, q), 10, runner.eos_ids)
        assert token_ids(items) == want
        wants.append(want)
    assert wants[0] != wants[2]     # same question, base vs adapter: the adapter changes the output

    engine.merge_adapter(model, a1, a1)     # the merged copy of the general runner answers the same
    _, _, _, items = run(collect(engine, request(model, [{"role": "user", "content": questions[2]}], adapter=a1,
                                                 max_tokens=10, temperature=0)))
    assert token_ids(items) == wants[2]
    assert type(engine._runners[f"merged:{model}|{a1}"]).__name__ == "GeneralRunner"


def test_fast_runner_serves_qwen2_with_biases_as_generate_does(engine_factory, settings, model_cache, tmp_path):
    """qwen2 is in model_runner.SUPPORTED: its q/k/v biases (fused into one qkv bias there) and a LoRA
    row beside base rows give transformers' and PEFT's answers."""
    from openft.models import register_local
    from openft.models.registry import tiny_model

    folder = tiny_model(settings, "qwen2")
    register_local(settings, "tiny-qwen2", folder)
    adapter = make_adapter(folder, tmp_path / "q2", seed=300)
    engine = engine_factory()
    choices = [None, adapter, None]
    questions = [QUESTIONS[1], QUESTIONS[1], QUESTIONS[2]]

    async def main():
        return await asyncio.gather(*[collect(engine, request("tiny-qwen2", [{"role": "user", "content": q}],
                                                              adapter=a, max_tokens=10, temperature=0))
                                      for q, a in zip(questions, choices)])

    results = run(main())
    runner = engine._runners["tiny-qwen2"]
    assert type(runner).__name__ == "ModelRunner" and runner.peak_adapters == 1 and runner.peak_rows == 3
    q = runner.model.model.layers[0].self_attn.q_proj.base_layer
    assert q.bias is not None and float(q.bias.detach().abs().sum()) > 0
    refs = {a: load(folder, a) for a in set(choices)}
    for q, a, (_, _, _, items) in zip(questions, choices, results):
        assert token_ids(items) == hf_greedy(refs[a], chat_ids(runner.tokenizer, q), 10, runner.eos_ids)


@pytest.mark.slow
def test_adapter_trained_by_openft_on_qwen3_served_beside_the_base(engine_factory, settings, arch, tmp_path):
    """The issue's case: a Qwen3 LoRA trained by openft's own trainer is chatted with, in one batch
    with base rows, and answers as PEFT's merged model does."""
    from openft.train.hooks import RecordingHooks
    from openft.train.loop import train
    from openft.train.spec import TrainSpec
    from tests.support.data import write_chat_jsonl

    data = write_chat_jsonl(tmp_path / "train.jsonl", 12)
    spec = TrainSpec(base_model="tiny-qwen3", train_file=str(data), output_dir=str(tmp_path / "job"), n_epochs=2,
                     batch_size=4, learning_rate_multiplier=10.0, seed=3, precision="fp32")
    adapter = train(spec, RecordingHooks(), settings).model_dir
    engine = engine_factory()
    msg = [{"role": "user", "content": "Review 3: the product was great."}]

    async def main():
        return await asyncio.gather(*[collect(engine, request("tiny-qwen3", msg, adapter=a, max_tokens=8, temperature=0))
                                      for a in (adapter, None, adapter)])

    results = run(main())
    runner = engine._runners["tiny-qwen3"]
    assert runner.peak_rows == 3 and runner.peak_adapters >= 1   # (two loads of one adapter may race)
    ids = chat_ids(runner.tokenizer, msg[0]["content"])
    want = {a: hf_greedy(load(arch["qwen3"], a), ids, 8, runner.eos_ids) for a in (adapter, None)}
    assert want[adapter] != want[None]
    for a, (_, _, _, items) in zip((adapter, None, adapter), results):
        assert token_ids(items) == want[a]
