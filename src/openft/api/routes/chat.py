"""`/v1/chat/completions`: OpenAI's chat request in, the engine's items out as a
`chat.completion` or as `chat.completion.chunk` server-sent events ending in `data: [DONE]`."""

from __future__ import annotations

import time
from typing import Any, Literal

from fastapi import APIRouter, Depends, Request
from fastapi.responses import StreamingResponse
from pydantic import Field

from openft.api.deps import AppState, get_project, get_state
from openft.api.schemas import Strict
from openft.api.generation import (SSE_HEADERS, collect, generation_request, resolve, sse, sse_stream,
                                   Stop, refuse_unsupported_sampling, start_streams,
                                   system_fingerprint, usage_object)
from openft.errors import InvalidRequest
from openft.ids import completion_id

router = APIRouter()


class StreamOptions(Strict):
    include_usage: bool | None = None
    include_obfuscation: bool | None = None


class Message(Strict):
    role: Literal["system", "developer", "user", "assistant", "tool", "function"]
    content: str | list[dict] | None = None
    name: str | None = None
    tool_calls: list[dict] | None = None
    tool_call_id: str | None = None
    refusal: str | None = None
    function_call: dict | None = None
    audio: dict | None = None


class ChatRequest(Strict):
    model: str = Field(max_length=512)
    messages: list[Message] = Field(min_length=1)
    temperature: float | None = Field(None, ge=0, le=2)
    top_p: float | None = Field(None, gt=0, le=1)
    n: int | None = Field(None, ge=1, le=128)
    max_tokens: int | None = Field(None, ge=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    stop: Stop = None
    seed: int | None = None
    logprobs: bool | None = None
    top_logprobs: int | None = Field(None, ge=0, le=20)
    stream: bool | None = None
    stream_options: StreamOptions | None = None
    frequency_penalty: float | None = Field(None, ge=-2, le=2)
    presence_penalty: float | None = Field(None, ge=-2, le=2)
    logit_bias: dict[str, float] | None = None
    response_format: dict | None = None
    tools: list[dict] | None = None
    tool_choice: Any = None
    parallel_tool_calls: bool | None = None
    user: str | None = None
    metadata: dict[str, str] | None = None
    store: bool | None = None
    service_tier: str | None = None
    safety_identifier: str | None = None
    prompt_cache_key: str | None = None


def _unsupported(req: ChatRequest) -> None:
    """Refuse what openft cannot honour instead of silently ignoring it."""
    refuse_unsupported_sampling(req)
    if req.response_format and req.response_format.get("type") != "text":
        raise InvalidRequest(f"response_format type {req.response_format.get('type')!r} is not supported by openft; "
                             "only 'text'.", param="response_format")
    if req.tool_choice not in (None, "none", "auto"):
        raise InvalidRequest("tool_choice other than 'none' or 'auto' is not supported by openft.", param="tool_choice")
    if req.top_logprobs and not req.logprobs:
        raise InvalidRequest("top_logprobs requires logprobs to be true.", param="top_logprobs")


def _engine_messages(messages: list[Message]) -> list[dict]:
    out = []
    for i, m in enumerate(messages):
        content = m.content
        if isinstance(content, list):
            texts = []
            for j, part in enumerate(content):
                kind = part.get("type")
                if kind not in ("text", "refusal"):
                    raise InvalidRequest(f"Content part type {kind!r} is not supported: openft serves text models.",
                                         param=f"messages[{i}].content[{j}].type")
                texts.append(part.get("text") or part.get("refusal") or "")
            content = "".join(texts)
        msg: dict = {"role": "system" if m.role == "developer" else m.role, "content": content or ""}
        for key in ("name", "tool_calls", "tool_call_id"):
            if getattr(m, key) is not None:
                msg[key] = getattr(m, key)
        out.append(msg)
    return out


def _sampling(req: ChatRequest):
    from openft.serve.types import SamplingParams

    stop = [req.stop] if isinstance(req.stop, str) else list(req.stop or [])
    return SamplingParams(
        max_tokens=req.max_completion_tokens if req.max_completion_tokens is not None else req.max_tokens,
        temperature=1.0 if req.temperature is None else req.temperature, top_p=1.0 if req.top_p is None else req.top_p,
        stop=stop, seed=req.seed, n=req.n or 1, logprobs=bool(req.logprobs), top_logprobs=req.top_logprobs or 0)


async def start(body: ChatRequest, state: AppState, project: str):
    """Check the request and start its generation: (streams, the response head, n). Shared by
    this route and by `/v1/responses`, which translates its request into a ChatRequest."""
    _unsupported(body)
    messages = _engine_messages(body.messages)
    params = _sampling(body)
    model = await resolve(state, project, body.model)
    streams = await start_streams(state, [generation_request(model, params, messages=messages, tools=body.tools)])
    head = {"id": completion_id(chat=True), "created": int(time.time()), "model": body.model,
            "service_tier": "default", "system_fingerprint": system_fingerprint(model)}
    return streams, head, params.n


async def completion(body: ChatRequest, request: Request, state: AppState, project: str) -> dict:
    """The whole `chat.completion` object for a non-streaming request."""
    streams, head, n = await start(body, state, project)
    choices, prompt_tokens, completion_tokens = await collect(request, streams, n)
    return {**head, "object": "chat.completion", "choices": [
        {"index": i, "message": {"role": "assistant", "content": "".join(c.text), "refusal": None, "annotations": []},
         "logprobs": {"content": c.logprobs, "refusal": None} if body.logprobs else None,
         "finish_reason": c.finish_reason or "stop"}
        for i, c in sorted(choices.items())], "usage": usage_object(prompt_tokens, completion_tokens)}


@router.post("/chat/completions")
async def chat_completions(body: ChatRequest, request: Request, state: AppState = Depends(get_state),
                           project: str = Depends(get_project)):
    if not body.stream:
        return await completion(body, request, state, project)
    streams, head, n = await start(body, state, project)
    include_usage = bool(body.stream_options and body.stream_options.include_usage)
    items = streams.items()
    chunks = (sse(c) async for c in chunk_objects(items, head, n, include_usage, bool(body.logprobs)))
    return StreamingResponse(sse_stream(chunks, items, "/v1/chat/completions"),
                             media_type="text/event-stream", headers=SSE_HEADERS)


async def chunk_objects(items, head: dict, n: int, include_usage: bool, logprobs: bool):
    """The `chat.completion.chunk` objects (dicts) of a stream, in OpenAI's order."""
    from openft.serve.types import Delta, Finish, Usage

    def chunk(choices: list[dict], **extra) -> dict:
        obj = {**head, "object": "chat.completion.chunk", "choices": choices, **extra}
        if include_usage and "usage" not in extra:
            obj["usage"] = None
        return obj

    for i in range(n):  # OpenAI opens each choice with the role and an empty content
        yield chunk([{"index": i, "delta": {"role": "assistant", "content": "", "refusal": None},
                      "logprobs": None, "finish_reason": None}])
    async for _, item in items:
        if isinstance(item, Delta):
            if not item.text and not item.logprobs:
                continue
            lp = {"content": item.logprobs or [], "refusal": None} if logprobs else None
            yield chunk([{"index": item.index, "delta": {"content": item.text}, "logprobs": lp,
                          "finish_reason": None}])
        elif isinstance(item, Finish):
            yield chunk([{"index": item.index, "delta": {}, "logprobs": None,
                          "finish_reason": item.finish_reason}])
        elif isinstance(item, Usage) and include_usage:
            yield chunk([], usage=usage_object(item.prompt_tokens, item.completion_tokens))
