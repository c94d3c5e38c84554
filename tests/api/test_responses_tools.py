"""Function calling and structured outputs through the Responses API, end to end: the tiny model
with a Hermes/Qwen (`<tool_call>`) chat template (tests/api/test_tools.py's), registered as a local
model, is forced to call a tool (`tool_choice` required / named), and the call comes back as
`function_call` items (non-streamed, streamed, and through the SDK's `responses.stream` and
`responses.parse`), then goes back in as a `function_call_output` with `previous_response_id`.
Each answer is the chat route's for the same request."""

from __future__ import annotations

import json
from typing import Literal

import pytest
from pydantic import BaseModel

MODEL = "tiny-hermes"
GREEDY = dict(model=MODEL, temperature=0)
# an enum keeps the random model's constrained call short enough to finish
WEATHER = {"type": "object", "properties": {"city": {"type": "string", "enum": ["Oslo", "Rome"]}},
           "required": ["city"], "additionalProperties": False}
TOOLS = [{"type": "function", "name": "get_weather", "description": "Weather in a city", "parameters": WEATHER,
          "strict": True}]
CHAT_TOOLS = [{"type": "function", "function": {k: v for k, v in TOOLS[0].items() if k != "type"}}]
ASK = [{"role": "user", "content": "What is the weather in Oslo?"}]


@pytest.fixture(scope="module")
def hermes(api_server, tiny_model_dir, tmp_path_factory):
    """The tiny model with a Hermes/Qwen tool template (built as the chat route's tool tests build it)."""
    from tests.support.models import make_tool_model, register

    register(api_server.data_dir, MODEL, make_tool_model(tiny_model_dir, tmp_path_factory.mktemp("hermes") / "m"))
    return MODEL


def _chat(api, **kw):
    return api.chat.completions.create(**GREEDY, **kw)


def _calls(response):
    return [(o.name, o.arguments) for o in response.output if o.type == "function_call"]


def test_forced_tool_call_and_its_output_round_trip(api, hermes):
    ref = _chat(api, messages=ASK, tools=CHAT_TOOLS, tool_choice="required", max_tokens=60,
                parallel_tool_calls=False)
    kw = dict(input=ASK, tools=TOOLS, tool_choice="required", parallel_tool_calls=False, max_output_tokens=60,
              **GREEDY)
    expected = [(t.function.name, t.function.arguments) for t in ref.choices[0].message.tool_calls]
    r = api.responses.create(**kw)
    assert _calls(r) == expected and len(expected) == 1 and r.status == "completed" and not r.parallel_tool_calls
    assert json.loads(expected[0][1])["city"] in ("Oslo", "Rome")
    assert r.usage.input_tokens == ref.usage.prompt_tokens and r.tools[0].name == "get_weather"
    call = next(o for o in r.output if o.type == "function_call")
    assert call.id.startswith("fc_") and call.call_id.startswith("call_")
    # the tool's answer goes back in; the prompt is the chat route's for the same three messages
    answer = api.responses.create(previous_response_id=r.id, tools=TOOLS, max_output_tokens=4, **GREEDY,
                                  input=[{"type": "function_call_output", "call_id": call.call_id,
                                          "output": "12 degrees"}])
    kinds = [i.type for i in api.responses.input_items.list(answer.id, order="asc").data]
    assert kinds == ["message", *(o.type for o in r.output), "function_call_output"]
    assistant = {"role": "assistant", "content": r.output_text or None, "tool_calls": [
        {"id": call.call_id, "type": "function", "function": {"name": call.name, "arguments": call.arguments}}]}
    chat2 = _chat(api, tools=CHAT_TOOLS, max_tokens=4, messages=[
        *ASK, assistant, {"role": "tool", "tool_call_id": call.call_id, "content": "12 degrees"}])
    assert answer.usage.input_tokens == chat2.usage.prompt_tokens


def test_named_tool_choice_streams_through_the_sdk(api, hermes):
    ref = _chat(api, messages=ASK, tools=CHAT_TOOLS, max_tokens=60, parallel_tool_calls=False,
                tool_choice={"type": "function", "function": {"name": "get_weather"}})
    kw = dict(input=ASK, tools=TOOLS, tool_choice={"type": "function", "name": "get_weather"}, max_output_tokens=60,
              parallel_tool_calls=False, **GREEDY)
    expected = [(t.function.name, t.function.arguments) for t in ref.choices[0].message.tool_calls]
    events = list(api.responses.create(stream=True, **kw))
    assert [e.arguments for e in events if e.type == "response.function_call_arguments.done"] == [
        a for _, a in expected]
    deltas = "".join(e.delta for e in events if e.type == "response.function_call_arguments.delta")
    assert deltas == "".join(a for _, a in expected) and events[-1].type == "response.completed"
    assert _calls(events[-1].response) == expected
    with api.responses.stream(**kw) as stream:
        for _ in stream:
            pass
        final = stream.get_final_response()
    call = next(o for o in final.output if o.type == "function_call")
    assert (call.name, call.arguments) == expected[0] and call.parsed_arguments == json.loads(expected[0][1])


class Weather(BaseModel):
    city: Literal["Oslo", "Rome"]


def test_parse_with_a_pydantic_text_format(api, hermes):
    from openai.lib._pydantic import to_strict_json_schema  # what responses.parse sends

    ref = _chat(api, messages=ASK, max_tokens=60, response_format={"type": "json_schema", "json_schema": {
        "name": "Weather", "schema": to_strict_json_schema(Weather), "strict": True}})
    r = api.responses.parse(input=ASK, text_format=Weather, max_output_tokens=60, **GREEDY)
    assert r.output_text == ref.choices[0].message.content
    assert ref.choices[0].finish_reason == "stop" and r.output_parsed.city in ("Oslo", "Rome")
