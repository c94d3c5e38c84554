"""Chat completions without the route: OpenAI's chat request (`ChatRequest`) checked and turned
into engine requests (`start`), the engine's items out as a `chat.completion` (`completion`) or as
`chat.completion.chunk` objects (`chunk_objects`). Used by `/v1/chat/completions`
(openft.api.routes.chat) and by the Responses API (openft.api.routes.responses), so no route
imports another. Knows the request and response shapes; the HTTP framing is the routes'."""

from __future__ import annotations

import time
from typing import Any, Literal

from fastapi import Request
from pydantic import Field

from openft.api.deps import AppState
from openft.api.generation import (
    Stop,
    collect,
    generation_request,
    refuse_unsupported_sampling,
    resolve,
    start_streams,
    stop_list,
    system_fingerprint,
    usage_object,
)
from openft.api.schemas import StreamOptions, Strict
from openft.data.formats import template_messages
from openft.errors import InvalidRequest
from openft.ids import completion_id
from openft.serve.constrain import check_finite


class Message(Strict):
    role: Literal["system", "developer", "user", "assistant", "tool", "function"]
    content: str | list[dict] | None = None
    name: str | None = None
    tool_calls: list[dict] | None = None
    tool_call_id: str | None = None
    refusal: str | None = None
    function_call: dict | None = None
    audio: dict | None = None
    annotations: list | None = None    # a returned assistant message sent back as it is


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
    if req.top_logprobs and not req.logprobs:
        raise InvalidRequest("top_logprobs requires logprobs to be true.", param="top_logprobs")


def response_schema(fmt: dict | None) -> dict | None:
    """The JSON schema a `response_format` asks for (json_object: any object), None for text."""
    kind = (fmt or {}).get("type", "text")
    if kind == "text":
        return None
    if kind == "json_object":
        return {"type": "object"}
    if kind == "json_schema":
        spec = fmt.get("json_schema")
        if not isinstance(spec, dict) or not isinstance(spec.get("name"), str):
            raise InvalidRequest("response_format json_schema needs `json_schema: {name, schema, strict?}`.",
                                 param="response_format.json_schema")
        schema = spec.get("schema", {})
        if not isinstance(schema, dict):
            raise InvalidRequest("response_format.json_schema.schema must be a JSON schema object.",
                                 param="response_format.json_schema.schema")
        check_finite(schema, "response_format.json_schema.schema")
        return schema
    raise InvalidRequest(f"response_format type {kind!r} is not supported; use text, json_object or json_schema.",
                         param="response_format")


def tool_choice(req: ChatRequest):
    """OpenAI's tool_choice and parallel_tool_calls as the engine's ToolChoice."""
    from openft.serve.types import ToolChoice

    parallel = req.parallel_tool_calls is not False
    c = req.tool_choice
    if c is None:
        return ToolChoice("auto" if req.tools else "none", parallel=parallel)
    if c in ("none", "auto", "required"):
        return ToolChoice(c, parallel=parallel)
    if isinstance(c, dict) and c.get("type") == "function" and isinstance((c.get("function") or {}).get("name"), str):
        return ToolChoice("function", c["function"]["name"], parallel=parallel)
    raise InvalidRequest("tool_choice must be 'none', 'auto', 'required' or {\"type\": \"function\", \"function\": "
                         "{\"name\": ...}}.", param="tool_choice")


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
    return template_messages(out)


def _sampling(req: ChatRequest, max_stop_chars: int):
    from openft.serve.types import SamplingParams

    stop = stop_list(req.stop, max_stop_chars)
    return SamplingParams(
        max_tokens=req.max_completion_tokens if req.max_completion_tokens is not None else req.max_tokens,
        temperature=1.0 if req.temperature is None else req.temperature, top_p=1.0 if req.top_p is None else req.top_p,
        stop=stop, seed=req.seed, n=req.n or 1, logprobs=bool(req.logprobs), top_logprobs=req.top_logprobs or 0,
        json_schema=response_schema(req.response_format))


async def start(body: ChatRequest, state: AppState, project: str):
    """Check the request and start its generation: (streams, the response head, n). Shared by
    this route and by `/v1/responses`, which translates its request into a ChatRequest."""
    _unsupported(body)
    messages = _engine_messages(body.messages)
    params = _sampling(body, state.settings.serve_max_stop_chars)
    choice = tool_choice(body)
    model = await resolve(state, project, body.model)
    tools = body.tools if choice.mode != "none" else None  # "none": the prompt does not offer them
    streams = await start_streams(state, [generation_request(model, params, messages=messages, tools=tools,
                                                             tool_choice=choice)])
    head = {"id": completion_id(chat=True), "created": int(time.time()), "model": body.model,
            "service_tier": "default", "system_fingerprint": system_fingerprint(model)}
    return streams, head, params.n


async def completion(body: ChatRequest, request: Request, state: AppState, project: str) -> dict:
    """The whole `chat.completion` object for a non-streaming request."""
    streams, head, n = await start(body, state, project)
    choices, prompt_tokens, completion_tokens = await collect(request, streams, n)
    return {**head, "object": "chat.completion", "choices": [
        {"index": i, "message": _message(c), "logprobs": {"content": c.logprobs, "refusal": None} if body.logprobs else None,
         "finish_reason": c.finish_reason or "stop"}
        for i, c in sorted(choices.items())], "usage": usage_object(prompt_tokens, completion_tokens)}


def _message(c) -> dict:
    """The assistant message of one choice; with tool calls, content is null unless the model also wrote text."""
    text = "".join(c.text)
    msg = {"role": "assistant", "content": text, "refusal": None, "annotations": []}
    if c.tool_calls:
        msg["content"] = text if text.strip() else None
        msg["tool_calls"] = c.tool_calls
    return msg


async def chunk_objects(items, head: dict, n: int, include_usage: bool, logprobs: bool):
    """The `chat.completion.chunk` objects (dicts) of a stream, in OpenAI's order."""
    from openft.serve.types import Delta, Finish, ToolCallDelta, Usage

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
        elif isinstance(item, ToolCallDelta):
            call: dict = {"index": item.call_index}
            if item.id is not None:  # a call opens: id, type and name, empty arguments
                call.update(id=item.id, type="function", function={"name": item.name, "arguments": item.arguments})
            else:
                call["function"] = {"arguments": item.arguments}
            yield chunk([{"index": item.index, "delta": {"tool_calls": [call]}, "logprobs": None,
                          "finish_reason": None}])
        elif isinstance(item, Finish):
            yield chunk([{"index": item.index, "delta": {}, "logprobs": None,
                          "finish_reason": item.finish_reason}])
        elif isinstance(item, Usage) and include_usage:
            yield chunk([], usage=usage_object(item.prompt_tokens, item.completion_tokens))
