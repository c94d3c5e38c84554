"""Legacy completions as evaluation harnesses use them, through the official SDK on a real server:
the four forms of `prompt` (text, texts, token ids, lists of token ids), echo + logprobs where the
sampled token ends the answer (its entry is there, so `token_logprobs[len(context):-1]` is the
continuation), and the bounds on stop sequences and prompts per request (400 naming the param)."""

from __future__ import annotations

import openai
import pytest

from tests.support.models import make_ending_model, register
from tests.support.servers import API, ServerSpec, running

MODEL = "openft-tiny"


@pytest.fixture(scope="module")
def srv(tmp_path_factory, model_cache, tiny_model_dir):
    root = tmp_path_factory.mktemp("prompts")
    spec = ServerSpec(API, worker=False, env={"OPENFT_SERVE_MAX_PROMPTS": "8", "OPENFT_SERVE_MAX_STOP_CHARS": "50"})
    with running(spec.server(root / "data", model_cache)) as server:
        register(server.data_dir, "tiny-ends", make_ending_model(tiny_model_dir, root / "ends"))
        yield server


@pytest.fixture(scope="module")
def api(srv):
    return srv.client()


def test_token_id_prompts_in_every_form_match_the_text(api, tiny_tokenizer):
    texts = ["The quick brown fox", "Once upon a time"]
    ids = [tiny_tokenizer(t, add_special_tokens=True)["input_ids"] for t in texts]
    kw = dict(model=MODEL, max_tokens=4, temperature=0)
    by_text = [c.text for c in api.completions.create(prompt=texts, **kw).choices]
    one = api.completions.create(prompt=ids[0], **kw)                 # a list of token ids: one prompt
    assert [c.text for c in one.choices] == by_text[:1]
    assert one.usage.prompt_tokens == len(ids[0])
    many = api.completions.create(prompt=ids, **kw)                   # a list of such lists
    assert [c.text for c in many.choices] == by_text
    echoed = api.completions.create(prompt=ids[1], echo=True, logprobs=1, **kw).choices[0]
    assert echoed.text == texts[1] + by_text[1]
    assert len(echoed.logprobs.tokens) == len(ids[1]) + 4


@pytest.mark.parametrize("prompt", [[10**9], [[1, 2], [-1]], [[]]])
def test_bad_token_id_prompts_are_400_naming_prompt(api, prompt):
    with pytest.raises(openai.BadRequestError) as e:
        api.completions.create(model=MODEL, prompt=prompt, max_tokens=1)
    assert e.value.body["param"] == "prompt"


def test_echo_logprobs_include_the_token_that_ends_the_answer(api, tiny_tokenizer):
    """As lm-evaluation-harness's loglikelihood request: context + continuation echoed, one token
    sampled; on a model that ends its answer there, that token still has its entry."""
    ctx = tiny_tokenizer("Question: what colour is the sky? Answer:", add_special_tokens=False)["input_ids"]
    cont = tiny_tokenizer(" blue", add_special_tokens=False)["input_ids"]
    for stream in (False, True):
        kw = dict(model="tiny-ends", prompt=[ctx + cont], max_tokens=1, temperature=0, echo=True, logprobs=1)
        if stream:
            chunks = list(api.completions.create(**kw, stream=True))
            text = "".join(c.choices[0].text for c in chunks)
            lps = [x for c in chunks if c.choices[0].logprobs for x in c.choices[0].logprobs.token_logprobs]
            finish = chunks[-1].choices[0].finish_reason
        else:
            c = api.completions.create(**kw).choices[0]
            text, lps, finish = c.text, c.logprobs.token_logprobs, c.finish_reason
            assert len(c.logprobs.tokens) == len(c.logprobs.top_logprobs) == len(c.logprobs.text_offset) == len(lps)
        assert finish == "stop"
        assert text == tiny_tokenizer.decode(ctx + cont)                 # the end token's text is left out
        assert len(lps) == len(ctx) + len(cont) + 1                       # ... its logprob is not
        continuation = lps[len(ctx):-1]
        assert len(continuation) == len(cont) and all(x < 0 for x in continuation)
        assert lps[-1] <= 0


def test_chat_logprobs_leave_the_end_token_out(api):
    """Chat keeps OpenAI's chat shape: content logprobs are the answer's text, token for token."""
    r = api.chat.completions.create(model="tiny-ends", messages=[{"role": "user", "content": "Hi"}],
                                    max_tokens=3, logprobs=True)
    assert r.choices[0].finish_reason == "stop" and r.choices[0].message.content == ""
    assert not r.choices[0].logprobs or not r.choices[0].logprobs.content


@pytest.mark.parametrize("call", ["chat", "completions"])
def test_a_stop_sequence_over_the_limit_is_400(api, call):
    for stop in ("x" * 51, ["ok", "y" * 51]):
        with pytest.raises(openai.BadRequestError) as e:
            if call == "chat":
                api.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "Hi"}], stop=stop,
                                            max_tokens=1)
            else:
                api.completions.create(model=MODEL, prompt="Hi", stop=stop, max_tokens=1)
        assert e.value.body["param"] == "stop" and "at most 50 characters" in e.value.body["message"]
    api.completions.create(model=MODEL, prompt="Hi", stop="z" * 50, max_tokens=1)      # at the limit: fine


def test_more_prompts_than_the_limit_is_400(api, tiny_tokenizer):
    for prompt in (["Hi"] * 9, [[5, 6]] * 9):
        with pytest.raises(openai.BadRequestError) as e:
            api.completions.create(model=MODEL, prompt=prompt, max_tokens=1)
        assert e.value.body["param"] == "prompt" and "At most 8 prompts" in e.value.body["message"]
    assert len(api.completions.create(model=MODEL, prompt=["Hi"] * 8, max_tokens=1).choices) == 8
