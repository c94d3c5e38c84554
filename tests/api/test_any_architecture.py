"""Chat with models the fast runner does not compute (tiny Qwen3 and Gemma2, registered as local
folders) through the real server and the official SDK: plain and streamed answers, equal to
transformers' greedy `generate`, with concurrent streams of different lengths."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import pytest
import torch

from tests.support.servers import API, ServerSpec

MSG = [{"role": "user", "content": "Write a short poem about the sea."}]


# float32 so that the answers can be compared with transformers' own generate token for token
SERVER = ServerSpec(API, worker=False, env={"OPENFT_SERVE_DTYPE": "float32"})


@pytest.fixture(scope="module")
def models(server, model_cache) -> dict[str, str]:
    from openft.config import Settings
    from openft.models import register_local
    from openft.models.registry import tiny_model

    folders = {}
    for t in ("qwen3", "gemma2"):
        folders[f"tiny-{t}"] = tiny_model(Settings(model_cache_dir=model_cache), t)
        register_local(Settings(data_dir=server.data_dir), f"tiny-{t}", folders[f"tiny-{t}"])
    return folders


def greedy_text(folder: str, messages: list[dict], n_new: int) -> tuple[str, int]:
    """transformers' greedy answer (special tokens dropped, as the API does) and its token count."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(folder)
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
    ids = tok.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    ids = tok(ids, add_special_tokens=False)["input_ids"]
    with torch.no_grad():
        out = model.generate(torch.tensor([ids]), attention_mask=torch.ones(1, len(ids), dtype=torch.long),
                             max_new_tokens=n_new, do_sample=False, pad_token_id=0)
    new = out[0, len(ids):].tolist()
    if tok.eos_token_id in new:
        new = new[: new.index(tok.eos_token_id)]
    return tok.decode(new, skip_special_tokens=True), len(new)


@pytest.mark.parametrize("model", ["tiny-qwen3", "tiny-gemma2"])
def test_chat_and_stream_on_a_non_llama_model(server, models, model):
    api = server.client()
    r = api.chat.completions.create(model=model, messages=MSG, max_tokens=12, temperature=0)
    want, n = greedy_text(models[model], MSG, 12)
    assert r.model == model and r.choices[0].message.content == want
    assert r.usage.completion_tokens == n and r.choices[0].finish_reason == ("length" if n == 12 else "stop")

    chunks = list(api.chat.completions.create(model=model, messages=MSG, max_tokens=12, temperature=0, stream=True,
                                              stream_options={"include_usage": True}))
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == want and len([c for c in chunks if c.choices and c.choices[0].delta.content]) >= 3
    assert chunks[-1].usage.completion_tokens == n


def test_concurrent_streams_of_different_lengths(server, models):
    api = server.client()
    questions = ["Hi", "What is the capital of France? Answer in one word, then explain why.", "Name three colours."]
    lengths = [16, 6, 10]

    def stream(q, n):
        msgs = [{"role": "user", "content": q}]
        chunks = api.chat.completions.create(model="tiny-qwen3", messages=msgs, max_tokens=n, temperature=0,
                                             stream=True)
        return "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)

    with ThreadPoolExecutor(3) as pool:
        got = list(pool.map(stream, questions, lengths))
    for q, n, text in zip(questions, lengths, got):
        assert text == greedy_text(models["tiny-qwen3"], [{"role": "user", "content": q}], n)[0]
