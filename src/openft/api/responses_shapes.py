"""The Responses API's shapes and their translation to and from chat completions (pure: no HTTP,
no database, no engine).

`ResponsesRequest` validates `POST /v1/responses`; `refuse_unsupported` answers 400 naming each
parameter openft cannot honour (hosted tools, background, conversation, reasoning options, ...)
rather than ignoring it; `input_items` turns `input` into Responses items with ids (what is stored
and what `input_items.list` returns); `chat_request` builds the `ChatRequest` that the chat route's
generation core runs; `output_items`, `usage` and `response_object` turn its `chat.completion`
back into a `response`. Tool calls and structured outputs are whatever the chat route produces:
this module only carries `tools`, `tool_choice` and `text.format` across and maps `tool_calls`
back to `function_call` items. Streaming events are built in routes/responses.py.
"""

from __future__ import annotations

import re
from typing import Any

from pydantic import Field, ValidationError

from openft.api.errors import validation_error
from openft.api.schemas import Strict
from openft.errors import InvalidRequest, OpenFTError
from openft.ids import new_id

LOGPROBS_INCLUDE = "message.output_text.logprobs"
HOSTED_TOOLS = ("web_search", "web_search_preview", "web_search_2025_08_26", "web_search_preview_2025_03_11",
                "file_search", "code_interpreter", "computer", "computer_use", "computer_use_preview",
                "image_generation", "mcp", "local_shell", "shell", "apply_patch", "tool_search",
                "programmatic_tool_calling")
# Known to OpenAI's Responses API, refused by openft whenever they are set.
REFUSED = {
    "background": "Background responses are not supported by openft; leave background unset or false.",
    "background_options": "Background responses are not supported by openft.",
    "conversation": "Conversations are not supported by openft; chain responses with previous_response_id.",
    "prompt": "Prompt templates are not supported by openft; send input and instructions instead.",
    "context_management": "Context management (compaction) is not supported by openft.",
    "moderation": "Moderation is not supported by openft.",
    "image": "Image options are not supported by openft: it serves text models.",
    "access_programs": "access_programs is not supported by openft.",
    "prompt_cache_options": "Prompt caching options are not supported by openft (it has no prompt cache).",
    "prompt_cache_retention": "Prompt caching options are not supported by openft (it has no prompt cache).",
}


class ResponsesRequest(Strict):
    model: str = Field(max_length=512)
    input: str | list[dict] | None = None
    instructions: str | None = None
    max_output_tokens: int | None = Field(None, ge=1)
    temperature: float | None = Field(None, ge=0, le=2)
    top_p: float | None = Field(None, gt=0, le=1)
    stream: bool | None = None
    stream_options: dict | None = None
    text: dict | None = None
    tools: list[dict] | None = None
    tool_choice: str | dict | None = None
    parallel_tool_calls: bool | None = None
    previous_response_id: str | None = Field(None, max_length=64)
    store: bool | None = None
    metadata: dict[str, str] | None = None
    include: list[str] | None = None
    top_logprobs: int | None = Field(None, ge=0, le=20)
    user: str | None = None
    safety_identifier: str | None = None
    prompt_cache_key: str | None = None
    service_tier: str | None = None
    truncation: str | None = None
    reasoning: dict | None = None
    max_tool_calls: int | None = Field(None, ge=1)  # counts built-in tool calls; openft has none
    background: bool | None = None
    background_options: Any = None
    conversation: Any = None
    prompt: Any = None
    context_management: Any = None
    moderation: Any = None
    image: Any = None
    access_programs: Any = None
    prompt_cache_options: Any = None
    prompt_cache_retention: Any = None

    @property
    def logprobs(self) -> bool:
        return LOGPROBS_INCLUDE in (self.include or []) or bool(self.top_logprobs)


def refuse_unsupported(body: ResponsesRequest) -> None:
    """400 naming the first parameter openft would otherwise have to ignore."""
    for name, message in REFUSED.items():
        if getattr(body, name) not in (None, False):
            raise InvalidRequest(message, param=name)
    if body.input is None:
        raise InvalidRequest("Missing required parameter: 'input'.", param="input", code="missing_required_parameter")
    if isinstance(body.input, list) and not body.input:
        raise InvalidRequest("input must hold at least one item.", param="input")
    for key, value in (body.reasoning or {}).items():
        if value is not None:
            raise InvalidRequest("Reasoning options are only for reasoning models, and openft's models are not: "
                                 "leave reasoning unset.", param=f"reasoning.{key}")
    if body.truncation not in (None, "disabled"):
        raise InvalidRequest(f"truncation {body.truncation!r} is not supported by openft; only 'disabled' (an input "
                             "longer than the model's context is a 400).", param="truncation")
    if body.service_tier not in (None, "auto", "default"):
        raise InvalidRequest(f"service_tier {body.service_tier!r} is not supported by openft; only 'auto' or "
                             "'default'.", param="service_tier")
    for i, value in enumerate(body.include or []):
        if value != LOGPROBS_INCLUDE:
            raise InvalidRequest(f"include value {value!r} is not supported by openft; only '{LOGPROBS_INCLUDE}'.",
                                 param=f"include[{i}]")
    if body.stream_options is not None:
        if not body.stream:
            raise InvalidRequest("stream_options is only allowed when stream is true.", param="stream_options")
        for key, value in body.stream_options.items():
            if key != "include_obfuscation":
                raise InvalidRequest(f"Unrecognized stream option: {key}", param=f"stream_options.{key}")
            if value:
                raise InvalidRequest("openft does not obfuscate stream events; set include_obfuscation to false.",
                                     param="stream_options.include_obfuscation")
    for key, value in (body.text or {}).items():
        if key == "verbosity" and value not in (None, "medium"):
            raise InvalidRequest("text.verbosity other than 'medium' is not supported by openft.",
                                 param="text.verbosity")
        if key not in ("format", "verbosity"):
            raise InvalidRequest(f"Unrecognized request argument supplied: text.{key}", param=f"text.{key}")
    for i, tool in enumerate(body.tools or []):
        _check_tool(tool, f"tools[{i}]")
    _check_tool_choice(body.tool_choice)


def _check_tool(tool: dict, param: str) -> None:
    kind = tool.get("type")
    if kind in HOSTED_TOOLS or (isinstance(kind, str) and kind.startswith(("web_search", "computer"))):
        raise InvalidRequest(f"The hosted tool {kind!r} runs on OpenAI's servers and is not available in openft; "
                             "only function tools are supported.", param=f"{param}.type")
    if kind != "function":
        raise InvalidRequest(f"Tool type {kind!r} is not supported by openft; only 'function'.", param=f"{param}.type")
    if not isinstance(tool.get("name"), str) or not tool["name"]:
        raise InvalidRequest("A function tool needs a name.", param=f"{param}.name", code="missing_required_parameter")
    for key, value in tool.items():
        if key not in ("type", "name", "description", "parameters", "strict") and value is not None:
            raise InvalidRequest(f"Function tool option {key!r} is not supported by openft.", param=f"{param}.{key}")


def _check_tool_choice(choice) -> None:
    if choice is None or choice in ("none", "auto", "required"):
        return
    if isinstance(choice, dict) and choice.get("type") == "function":
        if not isinstance(choice.get("name"), str):
            raise InvalidRequest("tool_choice of type 'function' needs a name.", param="tool_choice.name")
        return
    kind = choice.get("type") if isinstance(choice, dict) else choice
    raise InvalidRequest(f"tool_choice {kind!r} is not supported by openft; use 'none', 'auto', 'required' or "
                         "{'type': 'function', 'name': ...}.", param="tool_choice")


# -- input: Responses items with ids -----------------------------------------------------------

def message_item(role: str, texts: list[str], status: str = "completed", logprobs: list | None = None) -> dict:
    if role == "assistant":
        content = [{"type": "output_text", "text": t, "annotations": [], "logprobs": logprobs or []} for t in texts]
    else:
        content = [{"type": "input_text", "text": t} for t in texts]
    return {"id": new_id("msg_"), "type": "message", "role": role, "status": status, "content": content}


def function_call_item(call_id: str, name: str, arguments: str, status: str = "completed") -> dict:
    return {"id": new_id("fc_"), "type": "function_call", "status": status, "call_id": call_id, "name": name,
            "arguments": arguments}


def _texts(content, param: str) -> list[str]:
    if isinstance(content, str):
        return [content]
    if not isinstance(content, list):
        raise InvalidRequest("content must be a string or a list of content parts.", param=param)
    texts = []
    for j, part in enumerate(content):
        kind = part.get("type") if isinstance(part, dict) else None
        if kind in ("input_text", "output_text", "text") and isinstance(part.get("text"), str):
            texts.append(part["text"])
        elif kind == "refusal" and isinstance(part.get("refusal"), str):
            texts.append(part["refusal"])
        else:
            raise InvalidRequest(f"Content part type {kind!r} is not supported: openft serves text models.",
                                 param=f"{param}[{j}].type")
    return texts


def _required_str(item: dict, key: str, param: str) -> str:
    if not isinstance(item.get(key), str):
        raise InvalidRequest(f"Missing required parameter: '{param}.{key}'.", param=f"{param}.{key}",
                             code="missing_required_parameter")
    return item[key]


def input_items(value: str | list[dict]) -> list[dict]:
    """`input` as Responses items with fresh ids."""
    if isinstance(value, str):
        return [message_item("user", [value])]
    out = []
    for i, item in enumerate(value):
        param = f"input[{i}]"
        kind = item.get("type", "message" if "role" in item else None)
        if kind == "message":
            role = item.get("role")
            if role not in ("user", "system", "developer", "assistant"):
                raise InvalidRequest(f"Invalid role {role!r}: use user, system, developer or assistant.",
                                     param=f"{param}.role")
            out.append(message_item(role, _texts(item.get("content"), f"{param}.content")))
        elif kind == "function_call":
            out.append(function_call_item(*(_required_str(item, k, param) for k in ("call_id", "name", "arguments"))))
        elif kind == "function_call_output":
            call_id = _required_str(item, "call_id", param)
            output = "".join(_texts(item.get("output"), f"{param}.output"))
            out.append({"id": new_id("fco_"), "type": "function_call_output", "status": "completed",
                        "call_id": call_id, "output": output})
        elif kind == "item_reference":
            raise InvalidRequest("item_reference inputs are not supported by openft: send the item itself, or "
                                 "continue a stored conversation with previous_response_id.", param=f"{param}.type")
        else:
            raise InvalidRequest(f"Input items of type {kind!r} are not supported by openft; only message, "
                                 "function_call and function_call_output.", param=f"{param}.type")
    return out


def chat_messages(items: list[dict], instructions: str | None) -> list[dict]:
    """The conversation as chat messages; consecutive assistant text and function calls become one
    assistant message with `tool_calls`, a function call's output a `tool` message."""
    messages: list[dict] = [{"role": "system", "content": instructions}] if instructions else []
    for it in items:
        if it["type"] == "message":
            messages.append({"role": it["role"], "content": "".join(p.get("text") or p.get("refusal") or ""
                                                                    for p in it["content"])})
        elif it["type"] == "function_call":
            call = {"id": it["call_id"], "type": "function",
                    "function": {"name": it["name"], "arguments": it["arguments"]}}
            if messages and messages[-1]["role"] == "assistant":
                messages[-1].setdefault("tool_calls", []).append(call)
            else:
                messages.append({"role": "assistant", "content": None, "tool_calls": [call]})
        elif it["type"] == "function_call_output":
            messages.append({"role": "tool", "tool_call_id": it["call_id"], "content": it["output"]})
    return messages


def _response_format(fmt: dict) -> dict:
    if isinstance(fmt, dict) and fmt.get("type") == "json_schema":
        return {"type": "json_schema", "json_schema": {k: v for k, v in fmt.items() if k != "type"}}
    return fmt


def _chat_tool(tool: dict) -> dict:
    return {"type": "function", "function": {k: v for k, v in tool.items() if k != "type" and v is not None}}


def chat_request(body: ResponsesRequest, items: list[dict]):
    """The ChatRequest the chat route runs for this request and conversation."""
    from openft.api.chat import ChatRequest

    chat: dict[str, Any] = {
        "model": body.model, "messages": chat_messages(items, body.instructions), "temperature": body.temperature,
        "top_p": body.top_p, "max_completion_tokens": body.max_output_tokens, "stream": bool(body.stream),
        "parallel_tool_calls": body.parallel_tool_calls}
    if body.stream:
        chat["stream_options"] = {"include_usage": True}
    if body.logprobs:
        chat.update(logprobs=True, top_logprobs=body.top_logprobs or 0)
    fmt = (body.text or {}).get("format")
    if fmt is not None:
        chat["response_format"] = _response_format(fmt)
    if body.tools:
        chat["tools"] = [_chat_tool(t) for t in body.tools]
    if isinstance(body.tool_choice, dict):
        chat["tool_choice"] = {"type": "function", "function": {"name": body.tool_choice["name"]}}
    elif body.tool_choice is not None:
        chat["tool_choice"] = body.tool_choice
    try:
        return ChatRequest.model_validate({k: v for k, v in chat.items() if v is not None})
    except ValidationError as e:
        message, param, code = validation_error(list(e.errors()))
        raise InvalidRequest(message, param=responses_param(param), code=code) from None


_PARAMS = {"messages": "input", "max_completion_tokens": "max_output_tokens", "max_tokens": "max_output_tokens",
           "response_format": "text.format", "logprobs": "include"}


def responses_param(param: str | None) -> str | None:
    """The Responses parameter a chat-route error names (`response_format.json_schema.schema` ->
    `text.format.schema`, `tools[0].function.parameters` -> `tools[0].parameters`, `messages[3]` -> `input`)."""
    m = re.match(r"([a-z_]+)(.*)", param or "")
    if not m:
        return param
    name, rest = m.groups()
    if name == "messages":
        return "input"
    rest = rest.replace(".function", "", 1) if name in ("tools", "tool_choice") else rest
    rest = rest.replace(".json_schema", "", 1) if name == "response_format" else rest
    return _PARAMS.get(name, name) + rest


def translate_errors(e: OpenFTError) -> OpenFTError:
    e.param = responses_param(e.param)
    return e


# -- output ------------------------------------------------------------------------------------

def output_items(message: dict, finish_reason: str | None, logprobs: list | None) -> list[dict]:
    """A chat completion's message as Responses output items: its text as a `message` item, each
    tool call as a `function_call` item (call_id = the tool call's id)."""
    status = status_of(finish_reason)
    calls = message.get("tool_calls") or []
    out = []
    if message.get("content") or not calls:
        out.append(message_item("assistant", [message.get("content") or ""], status, logprobs))
    for c in calls:
        out.append(function_call_item(c["id"], c["function"]["name"], c["function"]["arguments"] or "", status))
    return out


def usage(chat_usage: dict | None) -> dict | None:
    if chat_usage is None:
        return None
    p, c = chat_usage["prompt_tokens"], chat_usage["completion_tokens"]
    return {"input_tokens": p, "input_tokens_details": {"cached_tokens": 0, "cache_write_tokens": 0},
            "output_tokens": c, "output_tokens_details": {"reasoning_tokens": 0}, "total_tokens": p + c}


def response_object(rid: str, body: ResponsesRequest, created_at: int, *, status: str, output: list[dict],
                    usage: dict | None = None, completed_at: int | None = None, error: dict | None = None) -> dict:
    """The `response` object, echoing the request's settings with OpenAI's defaults filled in."""
    return {
        "id": rid, "object": "response", "created_at": created_at, "status": status, "background": False,
        "completed_at": completed_at if status == "completed" else None, "error": error,
        "incomplete_details": {"reason": "max_output_tokens"} if status == "incomplete" else None,
        "instructions": body.instructions, "max_output_tokens": body.max_output_tokens,
        "max_tool_calls": body.max_tool_calls, "model": body.model, "output": output,
        "parallel_tool_calls": True if body.parallel_tool_calls is None else body.parallel_tool_calls,
        "previous_response_id": body.previous_response_id, "reasoning": {"effort": None, "summary": None},
        "service_tier": "default", "store": body.store is not False,
        "temperature": 1.0 if body.temperature is None else body.temperature,
        "text": {"format": (body.text or {}).get("format") or {"type": "text"}, "verbosity": "medium"},
        "tool_choice": body.tool_choice or "auto", "tools": body.tools or [],
        "top_logprobs": body.top_logprobs or 0, "top_p": 1.0 if body.top_p is None else body.top_p,
        "truncation": "disabled", "usage": usage, "user": body.user, "metadata": body.metadata or {},
        "safety_identifier": body.safety_identifier, "prompt_cache_key": body.prompt_cache_key,
    }


def status_of(finish_reason: str | None) -> str:
    return "incomplete" if finish_reason == "length" else "completed"
