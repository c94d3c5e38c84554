"""The SSE tail the streaming routes share: in-band errors, [DONE], cancellation on close."""

import asyncio
import json

from openft.api.generation import SSE_DONE, sse, sse_stream
from openft.errors import InvalidRequest


def _items(closed: list):
    async def gen():
        try:
            while True:
                yield 0, None
                await asyncio.sleep(0)
        finally:
            closed.append("items")
    return gen()


def _chunks(items, closed: list, fail: Exception | None = None, n: int = 2):
    """A route's chunk generator: one chunk per engine item, as the chat and completions routes."""
    async def gen():
        try:
            for i in range(n):
                await items.__anext__()
                yield sse({"i": i})
            if fail:
                raise fail
        finally:
            closed.append("chunks")
    return gen()


async def _all(agen) -> list[bytes]:
    return [c async for c in agen]


def test_a_finished_stream_ends_with_done_and_closes_its_requests():
    closed = []
    items = _items(closed)
    out = asyncio.run(_all(sse_stream(_chunks(items, closed), items, "/v1/x")))
    assert out == [sse({"i": 0}), sse({"i": 1}), SSE_DONE]
    assert sorted(closed) == ["chunks", "items"]


def test_an_error_after_the_headers_goes_in_band_in_openai_shape():
    closed = []
    items = _items(closed)
    out = asyncio.run(_all(sse_stream(_chunks(items, closed, RuntimeError("boom")), items, "/v1/x")))
    assert out[:2] == [sse({"i": 0}), sse({"i": 1})] and out[-1] == SSE_DONE
    err = json.loads(out[2][len(b"data: "):])["error"]
    assert err["type"] == "server_error" and "Generation failed: boom" in err["message"]
    items = _items([])
    out = asyncio.run(_all(sse_stream(_chunks(items, [], InvalidRequest("bad stop", param="stop")), items, "/v1/x")))
    err = json.loads(out[2][len(b"data: "):])["error"]
    assert err["message"] == "bad stop" and err["param"] == "stop"


def test_a_client_that_goes_away_cancels_the_requests_and_gets_no_done(caplog):
    closed = []

    async def main():
        items = _items(closed)
        stream = sse_stream(_chunks(items, closed, n=10), items, "/v1/x")
        first = await stream.__anext__()
        await stream.aclose()  # what the server does when the client disconnects
        return first

    with caplog.at_level("INFO"):
        assert asyncio.run(main()) == sse({"i": 0})
    assert sorted(closed) == ["chunks", "items"]
    assert "client disconnected from /v1/x mid-stream" in caplog.text
