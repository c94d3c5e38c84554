"""Back-pressure and cancellation on a server whose engine takes one sequence and no queue:
a second request gets a 429 with Retry-After, and a client that hangs up mid-stream frees
its slot (the generation is cancelled, not run to its 2000 tokens)."""

from __future__ import annotations

import httpx
import openai
import pytest

from tests.support.servers import API, ServerSpec, running
from tests.support.wait import wait_until

MSG = [{"role": "user", "content": "Tell me a long story."}]


@pytest.fixture(scope="module")
def one_slot(tmp_path_factory, model_cache):
    spec = ServerSpec(API, worker=False, env={"OPENFT_SERVE_MAX_BATCH": "1", "OPENFT_SERVE_MAX_QUEUE": "0"})
    with running(spec.server(tmp_path_factory.mktemp("slot") / "data", model_cache)) as server:
        yield server


def test_busy_is_429_and_disconnect_cancels(one_slot):
    client = one_slot.client()
    client.chat.completions.create(model="openft-tiny", messages=MSG, max_tokens=1)  # load the model
    stream = client.chat.completions.create(model="openft-tiny", messages=MSG, max_tokens=2000, stream=True)
    it = iter(stream)
    next(it), next(it)  # generation is running
    with pytest.raises(openai.RateLimitError) as e:
        client.chat.completions.create(model="openft-tiny", messages=MSG, max_tokens=1)
    assert int(e.value.response.headers["retry-after"]) >= 1
    assert e.value.body["type"] == "rate_limit_exceeded"
    stream.close()  # hang up
    r = _wait_free(client, 30, "the cancelled stream to free the engine's only slot")
    assert r.choices[0].finish_reason == "length"
    assert "client disconnected from /v1/chat/completions mid-stream; generation cancelled" in one_slot.log.read_text()


def _wait_free(client, timeout: float = 60.0, what: str = "the abandoned request to free the engine's only slot"):
    """A one-token answer, once the engine's only slot is free (until then each try is a 429)."""
    def answer():
        try:
            return client.chat.completions.create(model="openft-tiny", messages=MSG, max_tokens=1)
        except openai.RateLimitError:
            return None

    return wait_until(answer, timeout, what=what)


def test_disconnect_cancels_a_non_streaming_request(one_slot):
    client = one_slot.client()
    _wait_free(client)
    with pytest.raises(httpx.ReadTimeout):  # the client gives up and closes the connection
        httpx.post(f"{one_slot.base_url}/completions", timeout=2.0,
                   json={"model": "openft-tiny", "prompt": "Once upon a time", "max_tokens": 2000},
                   headers={"Authorization": f"Bearer {one_slot.api_key}"})
    _wait_free(client)
    assert "client disconnected from /v1/completions; generation cancelled" in one_slot.log.read_text()
