"""What chat and legacy completions share: model resolution into a `GenerationRequest`, running
one or more engine requests (merged, primed so that errors become HTTP errors before any byte is
sent), collecting them while watching for a client that went away, and SSE framing.

Knows the engine's item types (Delta, Finish, Usage); knows nothing about OpenAI's chunk shapes
(the routes build those).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Annotated

from fastapi import Request
from pydantic import AfterValidator
from starlette.concurrency import run_in_threadpool

from openft.api.deps import AppState
from openft.errors import InvalidRequest, OpenFTError
from openft.store.resolve import ResolvedModel, resolve_model

log = logging.getLogger("openft.api")


def _at_most_4(v):
    if isinstance(v, list) and len(v) > 4:
        raise ValueError("at most 4 stop sequences")
    return v


Stop = Annotated[str | list[str] | None, AfterValidator(_at_most_4)]
"""The `stop` field of chat and legacy completions: a string or up to 4 strings."""


def stop_list(stop: str | list[str] | None, max_chars: int) -> list[str]:
    """The `stop` field as a list; a sequence longer than `max_chars` (Settings.serve_max_stop_chars)
    is a 400 naming `stop` (every generated token is matched against every stop sequence)."""
    stops = [stop] if isinstance(stop, str) else list(stop or [])
    long = next((s for s in stops if len(s) > max_chars), None)
    if long is not None:
        raise InvalidRequest(f"A stop sequence may be at most {max_chars} characters long; got one of {len(long)}.",
                             param="stop")
    return stops


def refuse_unsupported_sampling(req) -> None:
    """What both chat and legacy completions refuse rather than silently ignore."""
    for name in ("frequency_penalty", "presence_penalty"):
        if getattr(req, name):
            raise InvalidRequest(f"{name} is not supported by openft; leave it unset or 0.", param=name)
    if req.logit_bias:
        raise InvalidRequest("logit_bias is not supported by openft.", param="logit_bias")
    if req.stream_options is not None and not req.stream:
        raise InvalidRequest("stream_options is only allowed when stream is true.", param="stream_options")


def system_fingerprint(m: ResolvedModel) -> str:
    return "fp_" + hashlib.sha256(f"{m.id}|{m.adapter_path}|{m.full_model_path}".encode()).hexdigest()[:10]


async def resolve(state: AppState, project: str, model: str) -> ResolvedModel:
    def run():
        with state.db.connect() as conn:
            return resolve_model(state.settings, conn, project, model)
    return await run_in_threadpool(run)


def generation_request(m: ResolvedModel, params, *, messages=None, prompt=None, tools=None, tool_choice=None):
    from openft.serve.types import GenerationRequest, ToolChoice

    return GenerationRequest(base_model=m.base_model, adapter_path=m.adapter_path,
                             adapter_key=m.id if m.kind != "base" else None, full_model_path=m.full_model_path,
                             messages=messages, prompt=prompt, params=params, tools=tools,
                             tool_choice=tool_choice or ToolChoice())


def usage_object(prompt_tokens: int, completion_tokens: int) -> dict:
    return {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
            "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
            "completion_tokens_details": {"reasoning_tokens": 0, "audio_tokens": 0,
                                          "accepted_prediction_tokens": 0, "rejected_prediction_tokens": 0}}


class Streams:
    """Several engine requests as one stream of (request number, item); legacy completions send
    one request per prompt, chat one. Closing it cancels every request."""

    def __init__(self, iterators: list[AsyncIterator]):
        self.iterators = iterators
        self._first: list = []

    async def start(self) -> Streams:
        """Await every request's first item, so engine errors (context length, busy) raise here."""
        try:
            self._first = [await it.__anext__() for it in self.iterators]
        except BaseException:
            await self.aclose()
            raise
        return self

    async def items(self):
        queue: asyncio.Queue = asyncio.Queue()
        done = object()

        async def pump(k: int, it: AsyncIterator, first) -> None:
            try:
                await queue.put((k, first))
                async for item in it:
                    await queue.put((k, item))
            except Exception as e:  # surfaces in the consumer
                await queue.put((k, e))
            finally:
                await queue.put((k, done))

        tasks = [asyncio.create_task(pump(k, it, f)) for k, (it, f) in enumerate(zip(self.iterators, self._first))]
        try:
            remaining = len(tasks)
            while remaining:
                k, item = await queue.get()
                if item is done:
                    remaining -= 1
                elif isinstance(item, Exception):
                    raise item
                else:
                    yield k, item
        finally:
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await self.aclose()

    async def aclose(self) -> None:
        for it in self.iterators:
            with contextlib.suppress(Exception):
                await it.aclose()  # closing early cancels the engine request


async def start_streams(state: AppState, requests: list) -> Streams:
    """Start the engine requests once their models are loaded: a model still loading answers 503
    (openft.serve.loading) rather than holding a worker thread while it loads."""
    for r in requests:
        await state.loads.ready_for(r)
    engine = await run_in_threadpool(state.engine)
    try:
        return await Streams([engine.generate(r) for r in requests]).start()
    except Exception as e:
        from jinja2 import TemplateError

        if isinstance(e, TemplateError):  # the model's chat template refused these messages
            raise InvalidRequest(f"The model's chat template cannot render these messages: {e}",
                                 param="messages") from None
        raise


class ClientDisconnected(OpenFTError):
    status = 400


@dataclass
class Choice:
    text: list[str] = field(default_factory=list)
    logprobs: list[dict] = field(default_factory=list)
    finish_reason: str | None = None
    tool_calls: list[dict] = field(default_factory=list)  # OpenAI's shape, arguments as one JSON string


async def collect(request: Request, streams: Streams, n_per_request: int) -> tuple[dict[int, Choice], int, int]:
    """Run to the end: ({choice index: Choice}, prompt_tokens, completion_tokens). A client that
    disconnects meanwhile cancels the generation."""
    from openft.serve.types import Delta, Finish, ToolCallDelta, Usage

    choices: dict[int, Choice] = {}
    usage = [0, 0]

    async def run():
        async for k, item in streams.items():
            if isinstance(item, Delta):
                c = choices.setdefault(k * n_per_request + item.index, Choice())
                c.text.append(item.text)
                if item.logprobs:
                    c.logprobs.extend(item.logprobs)
            elif isinstance(item, ToolCallDelta):
                c = choices.setdefault(k * n_per_request + item.index, Choice())
                if item.id is not None:
                    c.tool_calls.append({"id": item.id, "type": "function",
                                         "function": {"name": item.name, "arguments": item.arguments}})
                else:
                    c.tool_calls[item.call_index]["function"]["arguments"] += item.arguments
            elif isinstance(item, Finish):
                choices.setdefault(k * n_per_request + item.index, Choice()).finish_reason = item.finish_reason
            elif isinstance(item, Usage):
                usage[0] += item.prompt_tokens
                usage[1] += item.completion_tokens

    task = asyncio.create_task(run())
    try:
        while not (await asyncio.wait({task}, timeout=0.5))[0]:
            if await request.is_disconnected():
                log.info("client disconnected from %s; generation cancelled", request.url.path)
                raise ClientDisconnected("The client closed the connection; generation was cancelled.")
        task.result()  # re-raises an engine error
        return choices, usage[0], usage[1]
    finally:
        if not task.done():
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)


async def sse_stream(chunks: AsyncIterator[bytes], items, path: str) -> AsyncIterator[bytes]:
    """The tail every streaming route shares around its chunk generator: an error after the
    headers are sent goes in-band in OpenAI's error shape; a client that goes away is logged and
    its engine requests are cancelled (`items.aclose()`); a finished stream ends with [DONE]."""
    try:
        async for c in chunks:
            yield c
    except Exception as e:  # headers are gone: report in-band, as OpenAI does
        from openft.errors import ServerError

        err = e if isinstance(e, OpenFTError) else ServerError(f"Generation failed: {e}")
        yield sse(err.to_openai())
    except BaseException:  # the client went away (cancelled / closed generator)
        log.info("client disconnected from %s mid-stream; generation cancelled", path)
        raise
    finally:
        await chunks.aclose()
        await items.aclose()  # cancels the engine requests when the client went away
    yield SSE_DONE


def sse(obj) -> bytes:
    return b"data: " + json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode() + b"\n\n"


SSE_DONE = b"data: [DONE]\n\n"
SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
