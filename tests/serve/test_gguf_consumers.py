"""The GGUF export read by its real consumer: llama.cpp loads the f16 and q8_0 files and answers greedily
what openft's engine answers for the same prompts.

Tolerance, the same rule for both files, stricter for f16: on every prompt llama.cpp's greedy
tokens equal the engine's (float32) up to the first token where they differ; there, the token
llama.cpp took must be, in the engine's own distribution, within DELTA nats of the engine's pick
(a near-tie that rounding may flip: after it, the texts legitimately part); before it, the log-
probability llama.cpp gives each of the engine's tokens is within EPS of the engine's. f16 stores
weights with an 11-bit mantissa (measured here: logprobs within 0.013, every prompt identical); q8_0
rounds each block of 32 weights to 8 bits (measured: logprobs within 0.41, divergences only at
near-ties of 0.22 nats or less, 4 to 6 of 8 prompts identical, by llama.cpp's version and CPU build). So: f16 DELTA 0.05, EPS 0.05 and at
least 7 of 8 prompts identical over 16 tokens; q8_0 DELTA 0.5, EPS 1.0 and at least 3 of 8 identical
(the near-tie rule is the check; the count only refuses a file that parts from the engine on most
prompts, with one prompt of slack below the 4 measured on two CPU builds, as another build's
rounding may flip one more near-tie).

The tokenizer is checked too: llama.cpp tokenizes the rendered prompt (special tokens parsed) into
exactly the ids openft feeds. llama.cpp is node-llama-cpp's prebuilt CPU build (npm; scripts/llama_cpp.sh,
which scripts/test.sh runs unless OPENFT_SKIP_LLAMA is set), and it runs in a child process
(tests/support/llama_cpp_consumer.py): a native crash fails these tests with its signal, not the run.
"""

from __future__ import annotations

import asyncio
import os

import pytest
import torch

from openft.serve.export import export_model
from openft.serve.types import Delta, GenerationRequest, SamplingParams
from tests.support import llama_cpp_consumer

N_NEW = 16
PROMPTS = ["What is the capital of France?", "Write a haiku about autumn leaves.",
           "Explain photosynthesis in one sentence.", "List three prime numbers greater than 10.",
           "Translate 'good morning' into Spanish.", "What is 17 times 3?", "Give me a name for a pet turtle.",
           "Why is the sky blue?"]
TOLERANCE = {"f16": {"delta": 0.05, "eps": 0.05, "identical": 7},
             "q8_0": {"delta": 0.5, "eps": 1.0, "identical": 3}}


def engine_answers(engine, base: str, adapter: str | None) -> list[tuple[list[int], list[dict]]]:
    """Greedy tokens and their logprobs (with the top 20) from openft's engine, per prompt."""
    async def one(prompt: str):
        req = GenerationRequest(base_model=base, adapter_path=adapter, adapter_key="ft:export" if adapter else None,
                                full_model_path=None, messages=[{"role": "user", "content": prompt}], prompt=None,
                                params=SamplingParams(max_tokens=N_NEW, temperature=0, logprobs=True, top_logprobs=20))
        ids, lps = [], []
        async for item in engine.generate(req):
            if isinstance(item, Delta):
                ids += item.token_ids
                lps += item.logprobs
        return ids, lps

    return [asyncio.run(one(p)) for p in PROMPTS]


@pytest.fixture
def llama_cpp() -> None:
    """llama.cpp is installed, or the test skips (and fails in CI, where scripts/test.sh installs it)."""
    why = llama_cpp_consumer.missing()
    if why and os.environ.get("CI") == "true" and not os.environ.get("OPENFT_SKIP_LLAMA"):
        pytest.fail(f"{why}; in CI a missing consumer is a failure, not a skip (OPENFT_SKIP_LLAMA=1 skips)")
    if why:
        pytest.skip(why)


def check_against_engine(folder, runner, answers) -> None:
    tok = runner.tokenizer
    rendered = [tok.apply_chat_template([{"role": "user", "content": p}], add_generation_prompt=True, tokenize=False)
                for p in PROMPTS]
    prompts = [(text, tok(text, add_special_tokens=False)["input_ids"]) for text in rendered]
    for qtype, tol in TOLERANCE.items():
        read = llama_cpp_consumer.run(folder / f"model-{qtype}.gguf", prompts, runner.eos_ids, N_NEW)
        identical = 0
        for prompt, (_, prompt_ids), (want, lps), answer in zip(PROMPTS, prompts, answers, read):
            assert answer.tokens == prompt_ids, (qtype, prompt)
            got, rows = answer.generated, torch.from_numpy(answer.logits).log_softmax(-1)
            identical += got == want
            for i, row in enumerate(rows):
                if i < len(want):
                    gap = abs(float(row[want[i]]) - lps[i]["logprob"])
                    assert gap < tol["eps"], (qtype, prompt, i, gap)
                if i >= len(got) or i >= len(want) or got[i] != want[i]:
                    break
            if got != want and i < min(len(got), len(want)):   # parted at position i: a near-tie?
                took = runner.token_bytes(got[i])[0]
                alt = [x["logprob"] for x in lps[i]["top_logprobs"] if x["token"] == took]
                assert alt and lps[i]["logprob"] - alt[0] < tol["delta"], (qtype, prompt, i, took)
            elif got != want:                  # one stopped at end of turn where the other went on
                eos = min(runner.eos_ids, key=lambda e: -float(rows[i][e]))
                if len(got) < len(want):           # llama.cpp stopped: end of turn was a near-tie for us
                    end = runner.token_bytes(eos)[0]
                    alt = [x["logprob"] for x in lps[i]["top_logprobs"] if x["token"] == end]
                    assert alt and lps[i]["logprob"] - alt[0] < tol["delta"], (qtype, prompt, i)
                else:                              # we stopped: end of turn was a near-tie for llama.cpp
                    assert float(rows[i][got[i]] - rows[i][eos]) < tol["delta"], (qtype, prompt, i)
        assert identical >= tol["identical"], (qtype, identical)


def test_a_crash_in_llama_cpp_fails_the_test_with_its_signal(llama_cpp, settings, tmp_path):
    """llama.cpp dies of SIGSEGV once the model is loaded (as it did in decode on AMX Xeons): the caller's
    test fails, naming the signal, and pytest goes on."""
    folder = export_model(settings, "openft-tiny", None, None, "gguf", tmp_path / "gguf")
    with pytest.raises(pytest.fail.Exception, match=r"llama\.cpp crashed reading model-f16\.gguf: killed by "
                                                    r"signal SIGSEGV \(Segmentation fault\)") as failed:
        llama_cpp_consumer.run(folder / "model-f16.gguf", [("Hi", [])], set(), N_NEW, fault="segfault")
    assert "CPU variant" in str(failed.value)   # its stderr comes along: which libggml-cpu it had loaded


def test_llama_cpp_answers_as_the_engine_tiny_with_adapter(llama_cpp, settings, adapters, engine_factory, tmp_path):
    """The tiny model with a LoRA adapter: the export merges it; llama.cpp must see the merged weights."""
    folder = export_model(settings, "openft-tiny", adapters[0], None, "gguf", tmp_path / "gguf")
    engine = engine_factory()
    answers = engine_answers(engine, "openft-tiny", adapters[0])
    check_against_engine(folder, engine._runners["openft-tiny"], answers)


@pytest.mark.slow
def test_llama_cpp_answers_as_the_engine_smollm2(llama_cpp, settings, engine_factory, tmp_path):
    """The default model, whose greedy answers mean something ("The capital of France is Paris.")."""
    folder = export_model(settings, "smollm2-135m-instruct", None, None, "gguf", tmp_path / "gguf")
    engine = engine_factory()
    answers = engine_answers(engine, "smollm2-135m-instruct", None)
    check_against_engine(folder, engine._runners["smollm2-135m-instruct"], answers)
