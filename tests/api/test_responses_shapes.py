"""The Responses translation without a server: chat `tool_calls` (as OpenAI's chat API sends them,
whole and as `delta.tool_calls` chunks) become `function_call` items and
`function_call_arguments.*` events that the SDK's own stream accumulator (the code
`client.responses.stream` runs) accepts; a failure mid-stream ends in `error` + `response.failed`;
Responses tools, tool_choice and text.format reach the ChatRequest in chat's shape. These hold
whether or not the chat route produces tool calls yet; the live tests are in test_responses.py."""

from __future__ import annotations

import asyncio
import json

import pytest

from openft.api import responses_shapes as shapes
from openft.api.routes.responses import stream_events
from openft.errors import InvalidRequest, ServerError

TOOLS = [{"type": "function", "name": "get_weather", "strict": True,
          "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"],
                         "additionalProperties": False}}]


def _chunk(delta: dict | None = None, finish=None, usage=None) -> dict:
    choices = [] if delta is None else [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}]
    return {"id": "chatcmpl-x", "object": "chat.completion.chunk", "choices": choices, "usage": usage}


async def _aiter(chunks, fail: Exception | None = None):
    for c in chunks:
        yield c
    if fail is not None:
        raise fail


def _run(chunks, fail=None, **body):
    saved = []

    async def save(resp):
        saved.append(resp)

    async def go():
        req = shapes.ResponsesRequest(model="m", input="hi", **body)
        return [e async for e in stream_events("resp_1", req, 1, _aiter(chunks, fail), save)]

    raw = asyncio.run(go())
    events = []
    for e in raw:
        head, data = e.decode().split("\n", 1)
        payload = json.loads(data.removeprefix("data: "))
        assert head == f"event: {payload['type']}" and e.endswith(b"\n\n")
        events.append(payload)
    return events, saved


def _through_sdk(events, tools=()):
    """Feed the events to the SDK's ResponseStreamState; returns its final parsed response."""
    from openai import omit
    from openai._models import construct_type
    from openai.lib.streaming.responses._responses import ResponseStreamState
    from openai.types.responses import ResponseStreamEvent

    st = ResponseStreamState(input_tools=list(tools) or omit, text_format=omit)
    out = []
    for e in events:
        out += st.handle_event(construct_type(type_=ResponseStreamEvent, value=e))
    return out


TOOL_CHUNKS = [
    _chunk({"role": "assistant", "content": "", "refusal": None}),
    _chunk({"content": "Let me check."}),
    _chunk({"tool_calls": [{"index": 0, "id": "call_a", "type": "function",
                            "function": {"name": "get_weather", "arguments": ""}}]}),
    _chunk({"tool_calls": [{"index": 0, "function": {"arguments": '{"city": '}}]}),
    _chunk({"tool_calls": [{"index": 0, "function": {"arguments": '"Oslo"}'}}]}),
    _chunk({"tool_calls": [{"index": 1, "id": "call_b", "type": "function",
                            "function": {"name": "get_weather", "arguments": '{"city": "Rome"}'}}]}),
    _chunk({}, finish="tool_calls"),
    _chunk(usage={"prompt_tokens": 7, "completion_tokens": 20}),
]


def test_streamed_tool_calls_become_function_call_items():
    events, saved = _run(TOOL_CHUNKS, tools=TOOLS)
    types = [e["type"] for e in events]
    assert types == [
        "response.created", "response.in_progress",
        "response.output_item.added", "response.content_part.added", "response.output_text.delta",
        "response.output_text.done", "response.content_part.done", "response.output_item.done",
        "response.output_item.added", "response.function_call_arguments.delta",
        "response.function_call_arguments.delta", "response.function_call_arguments.done", "response.output_item.done",
        "response.output_item.added", "response.function_call_arguments.delta",
        "response.function_call_arguments.done", "response.output_item.done", "response.completed"]
    assert [e["sequence_number"] for e in events] == list(range(len(events)))
    final = events[-1]["response"]
    assert [(o["type"], o["status"]) for o in final["output"]] == [
        ("message", "completed"), ("function_call", "completed"), ("function_call", "completed")]
    assert [(o["call_id"], o["arguments"]) for o in final["output"][1:]] == [
        ("call_a", '{"city": "Oslo"}'), ("call_b", '{"city": "Rome"}')]
    assert final["usage"]["input_tokens"] == 7 and final["usage"]["total_tokens"] == 27
    assert saved == [final]
    sdk = _through_sdk(events, TOOLS)
    done = sdk[-1].response
    assert done.output_text == "Let me check." and done.output[1].parsed_arguments == {"city": "Oslo"}
    args = [e for e in sdk if e.type == "response.function_call_arguments.delta"]
    assert args[1].snapshot == '{"city": "Oslo"}'


def test_tool_call_with_no_text_has_no_message_item_and_text_stream_passes_the_sdk():
    events, _ = _run([c for i, c in enumerate(TOOL_CHUNKS) if i != 1])
    assert [o["type"] for o in events[-1]["response"]["output"]] == ["function_call", "function_call"]
    _through_sdk(events)
    text, _ = _run([_chunk({"content": "a"}), _chunk({"content": "b"}), _chunk({}, finish="length"),
                    _chunk(usage={"prompt_tokens": 1, "completion_tokens": 2})])
    assert text[-1]["type"] == "response.incomplete" and text[-1]["response"]["output"][0]["status"] == "incomplete"
    assert [e.type for e in _through_sdk(text)][-1] == "response.incomplete"


def test_failure_mid_stream_is_an_error_event_then_failed():
    events, saved = _run([_chunk({"content": "partial"})], fail=ServerError("engine died"))
    assert [e["type"] for e in events][-2:] == ["error", "response.failed"]
    assert events[-2]["message"] == "engine died" and events[-2]["code"] == "internal_error"
    failed = events[-1]["response"]
    assert failed["status"] == "failed" and failed["error"] == {"code": "server_error", "message": "engine died"}
    assert saved == [failed]


def test_completion_tool_calls_become_function_call_items():
    message = {"role": "assistant", "content": None, "tool_calls": [
        {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": '{"city":"Oslo"}'}}]}
    (item,) = shapes.output_items(message, "tool_calls", None)
    assert item["type"] == "function_call" and item["call_id"] == "call_1" and item["id"].startswith("fc_")
    assert item["name"] == "get_weather" and item["arguments"] == '{"city":"Oslo"}' and item["status"] == "completed"
    text_and_call = shapes.output_items({**message, "content": "Checking."}, "tool_calls", None)
    assert [i["type"] for i in text_and_call] == ["message", "function_call"]


def test_tools_tool_choice_and_text_format_reach_the_chat_request():
    body = shapes.ResponsesRequest(
        model="m", input="hi", instructions="sys", tools=TOOLS, tool_choice={"type": "function", "name": "get_weather"},
        parallel_tool_calls=False, max_output_tokens=9,
        text={"format": {"type": "json_schema", "name": "w", "strict": True, "schema": {"type": "object"}}})
    c = shapes.chat_request(body, shapes.input_items(body.input))
    assert c.tools == [{"type": "function", "function": {k: v for k, v in TOOLS[0].items() if k != "type"}}]
    assert c.tool_choice == {"type": "function", "function": {"name": "get_weather"}}
    assert c.parallel_tool_calls is False and c.max_completion_tokens == 9
    assert c.response_format == {"type": "json_schema",
                                 "json_schema": {"name": "w", "strict": True, "schema": {"type": "object"}}}
    assert [m.role for m in c.messages] == ["system", "user"]
    obj = shapes.ResponsesRequest(model="m", input="hi", text={"format": {"type": "json_object"}})
    obj = shapes.chat_request(obj, shapes.input_items(obj.input))
    assert obj.response_format == {"type": "json_object"}


def test_parallel_function_calls_in_input_are_one_assistant_message():
    items = shapes.input_items([
        {"role": "user", "content": "two cities"},
        {"type": "function_call", "call_id": "a", "name": "w", "arguments": "{}"},
        {"type": "function_call", "call_id": "b", "name": "w", "arguments": "{}"},
        {"type": "function_call_output", "call_id": "a", "output": "1"},
        {"type": "function_call_output", "call_id": "b", "output": [{"type": "input_text", "text": "2"}]}])
    msgs = shapes.chat_messages(items, None)
    assert [m["role"] for m in msgs] == ["user", "assistant", "tool", "tool"]
    assert [t["id"] for t in msgs[1]["tool_calls"]] == ["a", "b"] and msgs[3]["content"] == "2"


@pytest.mark.parametrize("param,expected", [
    ("response_format.json_schema.schema", "text.format.schema"),
    ("tools[0].function.parameters", "tools[0].parameters"),
    ("messages[3].content", "input"), ("max_tokens", "max_output_tokens"), ("tool_choice", "tool_choice"),
    ("model", "model"), (None, None)])
def test_chat_params_are_named_as_responses_params(param, expected):
    assert shapes.translate_errors(InvalidRequest("x", param=param)).param == expected
