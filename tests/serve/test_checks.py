"""The request checks both serving backends make (serve/checks.py): every problem in one error
naming the first param, prompts rendered the same whatever the content's shape, context limits."""

from __future__ import annotations

import pytest

from openft.errors import ContextLengthExceeded, InvalidRequest
from openft.serve.checks import check_length, check_params, encode_prompt
from openft.serve.types import GenerationRequest, SamplingParams


def test_every_bad_param_is_named_in_one_error_with_the_first_as_param():
    with pytest.raises(InvalidRequest) as err:
        check_params(SamplingParams(n=0, temperature=2.5, top_p=1.5, max_tokens=0, top_logprobs=21,
                                    stop=["a", "b", "c", "d", "e"]))
    assert err.value.param == "n"
    for part in ("n must be between 1 and 128, got 0", "temperature must be between 0 and 2, got 2.5",
                 "top_p must be in (0, 1], got 1.5", "max_tokens must be at least 1, got 0",
                 "top_logprobs must be between 0 and 20, got 21", "at most 4 stop sequences, got 5"):
        assert part in str(err.value)
    check_params(SamplingParams(n=128, temperature=2, top_p=1, top_logprobs=20, stop=["a", "b", "c", "d"]))
    check_params(SamplingParams(max_tokens=0, echo=True))   # echo alone: the prompt and nothing new


def test_content_parts_render_as_the_plain_string(tiny_tokenizer):
    def req(content):
        return GenerationRequest(base_model="openft-tiny", messages=[{"role": "user", "content": content}])

    plain = encode_prompt(tiny_tokenizer, req("Hello there"))
    parts = encode_prompt(tiny_tokenizer, req([{"type": "text", "text": "Hello "}, {"type": "text", "text": "there"}]))
    assert parts == plain
    with pytest.raises(InvalidRequest) as err:
        encode_prompt(tiny_tokenizer, GenerationRequest(base_model="openft-tiny"))
    assert err.value.param == "messages"


def test_context_length_names_the_part_to_shorten():
    ids = list(range(10))
    assert check_length(16, ids, SamplingParams(), "prompt") == 6
    assert check_length(16, ids, SamplingParams(max_tokens=6), "prompt") == 6
    with pytest.raises(ContextLengthExceeded) as err:
        check_length(16, ids, SamplingParams(max_tokens=7), "prompt")
    assert err.value.param == "max_tokens" and "17 tokens (10 in the prompt, 7 in the completion)" in str(err.value)
    with pytest.raises(ContextLengthExceeded) as err:
        check_length(10, ids, SamplingParams(), "messages")
    assert err.value.param == "messages" and "resulted in 10 tokens" in str(err.value)


def test_both_backends_use_these_checks():
    """vLLM is an optional install; its backend module imports without it, and refuses with the same code."""
    from openft.serve import checks, engine, vllm_backend

    for name in ("check_params", "check_length", "encode_prompt"):
        assert getattr(vllm_backend, name) is getattr(checks, name) is getattr(engine, name)
