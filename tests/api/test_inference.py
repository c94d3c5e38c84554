"""Chat and legacy completions on the tiny base model through the official SDK: shapes, seed,
n, stop, max_tokens / max_completion_tokens, logprobs, echo, streaming (SSE as OpenAI sends it),
usage, finish_reason and parameter errors. The fine-tuned / checkpoint models are in test_e2e."""

from __future__ import annotations

import json

import httpx
import openai
import pytest

MODEL = "openft-tiny"
MSG = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Say something."}]


def test_chat_shape_usage_and_length(api):
    r = api.chat.completions.create(model=MODEL, messages=MSG, max_tokens=4, seed=3)
    assert r.id.startswith("chatcmpl-") and r.object == "chat.completion" and r.model == MODEL
    assert r.system_fingerprint and r.created > 0
    (c,) = r.choices
    assert c.index == 0 and c.message.role == "assistant" and isinstance(c.message.content, str)
    assert c.finish_reason == "length" and c.logprobs is None
    assert r.usage.completion_tokens == 4 and r.usage.prompt_tokens > 5
    assert r.usage.total_tokens == r.usage.prompt_tokens + r.usage.completion_tokens
    assert r._request_id.startswith("req_")  # the SDK reads x-request-id


def test_streaming_n_choices_match_non_streaming(api):
    kw = dict(model=MODEL, messages=MSG, max_tokens=4, n=2, seed=21)
    plain = api.chat.completions.create(**kw)
    texts = {0: "", 1: ""}
    finishes = {}
    for c in api.chat.completions.create(**kw, stream=True):
        for ch in c.choices:
            texts[ch.index] += ch.delta.content or ""
            if ch.finish_reason:
                finishes[ch.index] = ch.finish_reason
    assert texts == {c.index: c.message.content for c in plain.choices}
    assert finishes == {0: "length", 1: "length"}


def test_seed_gives_same_output_and_n_choices(api):
    kw = dict(model=MODEL, messages=MSG, max_completion_tokens=6, temperature=1.0, seed=11)
    a, b = api.chat.completions.create(**kw), api.chat.completions.create(**kw)
    assert a.choices[0].message.content == b.choices[0].message.content
    r = api.chat.completions.create(**{**kw, "n": 3})
    assert [c.index for c in r.choices] == [0, 1, 2]
    assert r.usage.completion_tokens == 18
    assert all(c.finish_reason == "length" for c in r.choices)


def test_stop_sequence(api):
    kw = dict(model=MODEL, messages=MSG, max_tokens=12, seed=123)
    full = api.chat.completions.create(**kw).choices[0].message.content
    mid = next(i for i in range(len(full) // 2, len(full)) if full[i].strip())
    stop = full[mid: mid + 3]
    r = api.chat.completions.create(**kw, stop=[stop, "\u2603"])
    assert r.choices[0].message.content == full[: full.index(stop)]
    assert r.choices[0].finish_reason == "stop"


def test_logprobs(api):
    r = api.chat.completions.create(model=MODEL, messages=MSG, max_tokens=3, logprobs=True, top_logprobs=2, seed=1)
    content = r.choices[0].logprobs.content
    assert len(content) == 3
    for t in content:
        assert t.logprob <= 0 and len(t.top_logprobs) == 2 and t.bytes
    assert "".join(t.token for t in content) == r.choices[0].message.content


def test_streaming_matches_and_ends_with_done(api, api_server):
    kw = dict(model=MODEL, messages=MSG, max_tokens=6, temperature=0)
    text = api.chat.completions.create(**kw).choices[0].message.content
    chunks = list(api.chat.completions.create(**kw, stream=True, stream_options={"include_usage": True}))
    assert all(c.object == "chat.completion.chunk" and c.id == chunks[0].id for c in chunks)
    assert chunks[0].choices[0].delta.role == "assistant"
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == text
    finish = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finish == ["length"]
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == 6
    assert all(c.usage is None for c in chunks[:-1])
    with httpx.stream("POST", f"{api_server.base_url}/chat/completions", json={**kw, "stream": True},
                      headers={"Authorization": f"Bearer {api_server.api_key}"}) as r:
        assert r.headers["content-type"].startswith("text/event-stream")
        events = [line for line in r.iter_lines() if line]
    assert events[-1] == "data: [DONE]"
    assert all(e.startswith("data: ") for e in events)
    assert "usage" not in json.loads(events[-2][6:])  # no usage without include_usage


def test_completions_prompts_echo_and_logprobs(api):
    r = api.completions.create(model=MODEL, prompt=["Hello there", "Once"], max_tokens=3, n=2, seed=5,
                               logprobs=2, echo=True)
    assert r.object == "text_completion" and r.id.startswith("cmpl-")
    assert [c.index for c in r.choices] == [0, 1, 2, 3]
    assert r.choices[0].text.startswith("Hello there") and r.choices[2].text.startswith("Once")
    lp = r.choices[0].logprobs
    assert lp.token_logprobs[0] is None and lp.text_offset[0] == 0
    assert "".join(lp.tokens) == r.choices[0].text and len(lp.top_logprobs[-1]) == 2
    assert r.usage.completion_tokens == 12
    plain = api.completions.create(model=MODEL, prompt="Hello there", seed=5)
    assert plain.choices[0].finish_reason == "length" and plain.usage.completion_tokens == 16  # OpenAI's default


def test_completions_stream(api):
    kw = dict(model=MODEL, prompt="The weather", max_tokens=5, temperature=0)
    text = api.completions.create(**kw).choices[0].text
    chunks = list(api.completions.create(**kw, stream=True, stream_options={"include_usage": True}))
    assert "".join(c.choices[0].text for c in chunks if c.choices) == text
    assert chunks[-1].usage.completion_tokens == 5


@pytest.mark.parametrize("kwargs,param", [
    ({"temperature": 3}, "temperature"),
    ({"n": 0}, "n"),
    ({"top_logprobs": 3}, "top_logprobs"),
    ({"stop": ["a", "b", "c", "d", "e"]}, "stop"),
    ({"stop": 5}, "stop"),
    ({"stream_options": {"include_usage": True}}, "stream_options"),
    ({"presence_penalty": 1.0}, "presence_penalty"),
    ({"extra_body": {"best_of": 2}}, "best_of"),
    ({"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}]},
     "messages[0].content[0].type"),
    ({"messages": [{"role": "robot", "content": "x"}]}, "messages[0].role"),
    ({"messages": []}, "messages"),
    ({"max_tokens": 100000}, "max_tokens"),
])
def test_chat_bad_parameters(api, kwargs, param):
    args = {"model": MODEL, "messages": MSG, "max_tokens": 2, **kwargs}
    with pytest.raises(openai.BadRequestError) as e:
        api.chat.completions.create(**args)
    assert e.value.body["param"] == param, e.value.body
    if param == "max_tokens":
        assert e.value.body["code"] == "context_length_exceeded"


def test_unknown_model_is_404(api):
    for call in (lambda: api.chat.completions.create(model="nope", messages=MSG),
                 lambda: api.completions.create(model="ft:openft-tiny:openft::abcdefgh", prompt="x")):
        with pytest.raises(openai.NotFoundError) as e:
            call()
        assert e.value.body["param"] == "model" and e.value.body["code"] == "model_not_found"


def test_models_list_retrieve_delete_base(api):
    models = {m.id: m for m in api.models.list()}
    assert models[MODEL].owned_by == "system" and models[MODEL].object == "model"
    got = api.models.retrieve(MODEL)
    assert got.id == MODEL
    # a real timestamp (when the model's source appeared), the same in list and retrieve, every time
    assert models[MODEL].created > 1_600_000_000 and got.created == models[MODEL].created
    assert all(m.created > 1_600_000_000 for m in models.values())
    assert {m.id: m.created for m in api.models.list()} == {k: m.created for k, m in models.items()}
    with pytest.raises(openai.NotFoundError):
        api.models.retrieve("no-such-model")
    with pytest.raises(openai.BadRequestError) as e:
        api.models.delete(MODEL)
    assert e.value.body["param"] == "model"


def test_registered_local_folder_is_a_base_model(api, api_server, tiny_model_dir):
    """A local Hugging Face folder registered under a name is listed (created = its config.json's
    mtime) and serves chat under that name."""
    import os

    from openft.config import Settings
    from openft.models import register_local

    register_local(Settings(data_dir=api_server.data_dir), "my-local-tiny", tiny_model_dir)
    listed = {m.id: m for m in api.models.list()}
    assert listed["my-local-tiny"].owned_by == "system"
    assert listed["my-local-tiny"].created == int(os.stat(os.path.join(tiny_model_dir, "config.json")).st_mtime)
    assert api.models.retrieve("my-local-tiny").created == listed["my-local-tiny"].created
    r = api.chat.completions.create(model="my-local-tiny", messages=MSG, max_tokens=2)
    assert r.model == "my-local-tiny" and r.usage.completion_tokens == 2
