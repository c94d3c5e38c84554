"""The engine end to end on the tiny model: mixed-adapter batches against peft, streaming,
stop strings, seeds, n, logprobs, echo, cancellation, back-pressure and context limits."""

from __future__ import annotations

import asyncio

import pytest
import torch

from openft.errors import ContextLengthExceeded, InvalidRequest, RateLimited
from openft.serve.types import Delta, Finish, GenerationRequest, SamplingParams, Usage
from tests.support.serving import collect, run
from tests.support.wait import wait_until

MSG = [{"role": "user", "content": "Write a short poem about the sea."}]


def chat(adapter=None, key=None, **params) -> GenerationRequest:
    return GenerationRequest(base_model="openft-tiny", adapter_path=adapter, adapter_key=key,
                             full_model_path=None, messages=MSG, prompt=None, params=SamplingParams(**params))


def prompt_ids(tok) -> list[int]:
    text = tok.apply_chat_template(MSG, add_generation_prompt=True, tokenize=False)
    return tok(text, add_special_tokens=False)["input_ids"]


def peft_greedy(base_dir, adapter, ids, n_new) -> list[int]:
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(base_dir, dtype=torch.float32)
    if adapter:
        model = PeftModel.from_pretrained(model, adapter)
    model.eval()
    with torch.no_grad():
        out = model.generate(torch.tensor([ids]), max_new_tokens=n_new, do_sample=False,
                             attention_mask=torch.ones(1, len(ids), dtype=torch.long))
    new = out[0, len(ids):].tolist()
    return new[: new.index(2)] if 2 in new else new  # 2 = <|im_end|>, the engine does not emit it


def token_ids(items) -> list[int]:
    return [t for it in items if isinstance(it, Delta) for t in it.token_ids]


def test_mixed_adapter_batch_equals_each_adapter_alone_with_peft(engine_factory, adapters, tiny_model_dir,
                                                                  tiny_tokenizer):
    engine = engine_factory()
    choices = [None, adapters[0], adapters[1], adapters[2], adapters[0]]

    async def main():
        return await asyncio.gather(*[collect(engine, chat(a, key=a, max_tokens=16, temperature=0)) for a in choices])

    results = run(main())
    runner = engine._runners["openft-tiny"]
    assert runner.peak_rows >= 3 and runner.peak_adapters >= 2  # they really shared forward passes
    ids = prompt_ids(tiny_tokenizer)
    expected = {a: peft_greedy(tiny_model_dir, a, ids, 16) for a in set(choices)}
    assert len({tuple(v) for v in expected.values()}) == 4  # the adapters do change the output
    for a, (_, _finishes, usage, items) in zip(choices, results):
        assert token_ids(items) == expected[a]
        assert usage.prompt_tokens == len(ids)


def test_streaming_delivers_tokens_as_they_come(engine_factory, tiny_tokenizer):
    engine = engine_factory()
    texts, finishes, usage, items = run(collect(engine, chat(max_tokens=20, temperature=0)))
    deltas = [it for it in items if isinstance(it, Delta)]
    assert len(deltas) >= 5
    assert isinstance(items[-1], Usage) and isinstance(items[-2], Finish)
    assert texts[0] == tiny_tokenizer.decode(token_ids(items), skip_special_tokens=True)
    assert finishes[0] in ("length", "stop")
    if finishes[0] == "length":
        assert usage.completion_tokens == 20


def test_stop_string_across_token_boundary(engine_factory, tiny_tokenizer):
    engine = engine_factory()
    full, _, _, items = run(collect(engine, chat(max_tokens=30, temperature=1.0, seed=5)))
    ids = token_ids(items)
    pieces = [tiny_tokenizer.decode(ids[:k], skip_special_tokens=True) for k in range(len(ids) + 1)]
    # a stop string that starts inside one token and ends inside the next
    k = next(k for k in range(3, len(ids)) if len(pieces[k]) - len(pieces[k - 1]) >= 2
             and len(pieces[k + 1]) - len(pieces[k]) >= 2)
    boundary = len(pieces[k])
    stop = full[0][boundary - 1: boundary + 1]
    first = full[0].find(stop)
    texts, finishes, _, _ = run(collect(engine, chat(max_tokens=30, temperature=1.0, seed=5,
                                                     stop=[stop, "never-there"])))
    assert finishes[0] == "stop"
    assert texts[0] == full[0][:first]


def test_same_seed_same_text_whatever_else_is_in_the_batch(engine_factory, adapters):
    engine = engine_factory()
    req = chat(adapters[0], key="a0", max_tokens=24, temperature=1.0, seed=1234)
    alone = run(collect(engine, req))[0][0]

    async def crowded():
        others = [collect(engine, chat(a, key=a, max_tokens=30, temperature=1.0, seed=i))
                  for i, a in enumerate([None, adapters[1], adapters[2]])]
        return await asyncio.gather(collect(engine, req), *others)

    together = run(crowded())[0][0][0]
    assert together == alone
    other_seed = run(collect(engine, chat(adapters[0], key="a0", max_tokens=24, temperature=1.0, seed=99)))[0][0]
    assert other_seed != alone


def test_n_choices_logprobs_and_echo(engine_factory, tiny_tokenizer):
    engine = engine_factory()
    texts, finishes, usage, items = run(collect(engine, chat(max_tokens=8, temperature=1.0, seed=7, n=3,
                                                             logprobs=True, top_logprobs=3)))
    assert sorted(finishes) == [0, 1, 2] and len(set(texts.values())) > 1
    for i in range(3):
        lps = [lp for it in items if isinstance(it, Delta) and it.index == i for lp in it.logprobs]
        ids = [t for it in items if isinstance(it, Delta) and it.index == i for t in it.token_ids]
        assert len(lps) == len(ids) > 0
        for lp in lps:
            assert lp["logprob"] <= 0 and len(lp["top_logprobs"]) == 3
            assert lp["top_logprobs"][0]["logprob"] >= lp["logprob"] - 1e-5
        assert "".join(lp["token"] for lp in lps) == texts[i]
    assert usage.completion_tokens >= 3 * len(ids) - 3

    prompt = "The quick brown fox"
    req = GenerationRequest(base_model="openft-tiny", adapter_path=None, adapter_key=None, full_model_path=None,
                            messages=None, prompt=prompt,
                            params=SamplingParams(max_tokens=4, temperature=0, echo=True, logprobs=True, top_logprobs=2))
    texts, _, usage, items = run(collect(engine, req))
    first = items[0]
    assert first.text == prompt and first.token_ids == tiny_tokenizer(prompt)["input_ids"]
    assert first.logprobs[0]["logprob"] is None and all(lp["logprob"] <= 0 for lp in first.logprobs[1:])
    assert texts[0].startswith(prompt) and usage.prompt_tokens == len(first.token_ids)


def test_closing_the_iterator_cancels_the_sequence(engine_factory):
    engine = engine_factory()

    async def main():
        agen = engine.generate(chat(max_tokens=1500, temperature=1.0, seed=1))
        got = 0
        async for it in agen:
            got += isinstance(it, Delta)
            if got == 3:
                break
        await agen.aclose()

        def idle():
            return engine.stats()["outstanding"] == 0 and engine.stats()["running"] == 0

        return await asyncio.to_thread(wait_until, idle, 4, what="the engine to drop the request", interval=0.02)

    assert run(main())
    # the engine keeps serving after a cancel
    assert run(collect(engine, chat(max_tokens=3, temperature=0)))[2].completion_tokens >= 1


def test_full_queue_answers_429_with_retry_after(engine_factory):
    engine = engine_factory(serve_max_batch=1, serve_max_queue=1)

    async def main():
        a = engine.generate(chat(max_tokens=1500, temperature=1.0, seed=1))
        b = engine.generate(chat(max_tokens=1500, temperature=1.0, seed=2))
        first = await a.__anext__()
        waiter = asyncio.ensure_future(b.__anext__())   # admitted to the queue, waits behind `a`
        await asyncio.to_thread(wait_until, lambda: engine.stats()["outstanding"] == 2, 2, interval=0.02,
                                what="`b` to be admitted")
        c = engine.generate(chat(max_tokens=5))
        with pytest.raises(RateLimited) as err:
            await c.__anext__()
        await a.aclose()
        second = await waiter                           # `b` runs once `a` is gone
        await b.aclose()
        return first, second, err.value

    first, second, err = run(main())
    assert isinstance(first, Delta) and isinstance(second, Delta)
    assert err.status == 429 and int(err.headers["Retry-After"]) >= 1


def test_context_length_and_bad_params_are_400(engine_factory):
    engine = engine_factory()
    long_msg = [{"role": "user", "content": "word " * 2100}]
    req = GenerationRequest(base_model="openft-tiny", adapter_path=None, adapter_key=None, full_model_path=None,
                            messages=long_msg, prompt=None, params=SamplingParams(max_tokens=5))
    with pytest.raises(ContextLengthExceeded, match="2048") as err:
        run(collect(engine, req))
    assert err.value.status == 400 and err.value.param == "messages"
    with pytest.raises(ContextLengthExceeded, match="2048") as err:
        run(collect(engine, chat(max_tokens=4000)))
    assert err.value.param == "max_tokens"
    with pytest.raises(InvalidRequest, match="top_p") as err:
        run(collect(engine, chat(top_p=0)))
    assert err.value.param == "top_p"


def test_adapter_cache_is_lru_and_evict_drops(engine_factory, adapters):
    engine = engine_factory(serve_max_adapters=2)
    for a in [adapters[0], adapters[1], adapters[0], adapters[2], adapters[0]]:
        run(collect(engine, chat(a, key=f"ft:{a}", max_tokens=1, temperature=0)))
    stats = engine.stats()
    assert stats["adapter_loads"] == 3 and len(stats["adapters"]) == 2  # a0 stayed as most recently used
    engine.evict(f"ft:{adapters[0]}")
    assert all(not k.endswith(adapters[0]) for k in engine.stats()["adapters"])
    run(collect(engine, chat(adapters[0], key=f"ft:{adapters[0]}", max_tokens=1, temperature=0)))
    assert engine.stats()["adapter_loads"] == 4


def test_bad_adapter_folder_is_a_clear_error(engine_factory, tmp_path):
    from openft.errors import NotFound

    engine = engine_factory()
    with pytest.raises(NotFound, match="adapter_config.json"):
        run(collect(engine, chat(str(tmp_path), key="x", max_tokens=1)))


def test_vllm_backend_without_vllm_is_a_clear_error(settings):
    import importlib.util

    from openft.serve.backend import ServingBackend, open_engine
    from openft.serve.engine import Engine

    if importlib.util.find_spec("vllm") is not None:
        pytest.skip("vllm is installed here")
    with pytest.raises(InvalidRequest, match="vllm") as err:
        open_engine(settings, backend="vllm")
    assert err.value.param == "serve_backend"
    with pytest.raises(InvalidRequest, match="builtin"):
        open_engine(settings, backend="tgi")
    engine = open_engine(settings, backend="builtin")
    assert isinstance(engine, Engine) and isinstance(engine, ServingBackend)
    engine.close()


def test_bfloat16_engine_matches_float32(settings, adapters):
    """The bf16 path (padded token buckets on CPU) serves the same distribution, up to bf16 precision."""
    from openft.serve.engine import Engine

    req = GenerationRequest(base_model="openft-tiny", adapter_path=adapters[1], adapter_key="a1", full_model_path=None,
                            messages=None, prompt="Once upon a time, in a land far away",
                            params=SamplingParams(max_tokens=3, echo=True, logprobs=True, temperature=0))
    got = {}
    for dtype in ("float32", "bfloat16"):
        engine = Engine(settings, dtype=dtype)
        try:
            got[dtype] = torch.tensor([lp["logprob"] for lp in run(collect(engine, req))[3][0].logprobs[1:]])
        finally:
            engine.close()
    assert (got["float32"] - got["bfloat16"]).abs().max() < 0.1


def test_a_cancel_in_the_pass_that_admits_a_request_fails_nobody(engine_factory):
    """Two requests decode; one is cancelled while a third waits: the decode thread admits the third
    (its prompt joins at the end) and drops the cancelled one in the same pass. The others finish
    as if alone (the moved sequence keeps its KV cache); before, `forward` raised and all got 500s."""
    engine = engine_factory()
    b_req = dict(max_tokens=40, temperature=1.0, seed=11)
    c_req = dict(max_tokens=12, temperature=1.0, seed=12)
    alone_b = token_ids(run(collect(engine, chat(**b_req)))[3])
    alone_c = token_ids(run(collect(engine, chat(**c_req)))[3])

    async def main():
        a = engine.generate(chat(max_tokens=1500, temperature=1.0, seed=10))
        await a.__anext__()                    # `a` is decoding
        b = engine.generate(chat(**b_req))
        b_items = [await b.__anext__()]        # `b` is decoding too, in the slot after `a`
        runner = engine._runners["openft-tiny"]
        with engine._cv:                       # the decode thread waits at its next pass
            assert [s.req is not None and s.pos > 0 for s in runner.seqs] == [True, True]
            await a.aclose()                   # cancel `a` ...
            c_task = asyncio.ensure_future(collect(engine, chat(**c_req)))
            while not engine._waiting:         # ... while `c` waits to be admitted
                await asyncio.sleep(0.01)
        async for it in b:
            b_items.append(it)
        return b_items, await c_task

    b_items, (_, c_finishes, c_usage, c_items) = run(main())
    assert isinstance(b_items[-1], Usage) and all(not isinstance(it, Exception) for it in b_items)
    assert token_ids(b_items) == alone_b
    assert token_ids(c_items) == alone_c and c_usage.completion_tokens == len(alone_c)
    assert engine.stats()["outstanding"] == 0
