"""Tool calls through the official SDK against a live server: tools rendered with the model's
tool format, tool_choice required / a named function forcing a valid call (constrained
decoding), streamed tool-call deltas, a round trip with a `tool` message (a template without a
tool format: test_tools_default_format.py). The model is the tiny random model with a Qwen/Hermes-style
template (`tiny-tools`, registered as a local model); it writes noise unless constrained."""

from __future__ import annotations

import json
from pathlib import Path

import openai
import pytest

from tests.support.models import make_tool_model, register

WEATHER = {"type": "function", "function": {
    "name": "get_weather", "description": "Current weather in a city.",
    "parameters": {"type": "object", "properties": {"city": {"type": "string", "maxLength": 12},
                                                    "unit": {"enum": ["c", "f"]}},
                   "required": ["city", "unit"], "additionalProperties": False}}}
TIME = {"type": "function", "function": {
    "name": "get_time", "parameters": {"type": "object", "properties": {"zone": {"type": "string", "maxLength": 6}},
                                       "required": ["zone"], "additionalProperties": False}}}
ASK = [{"role": "user", "content": "What is the weather in Paris?"}]


@pytest.fixture(scope="module")
def tool_model_dir(tiny_model_dir, tmp_path_factory) -> Path:
    return make_tool_model(tiny_model_dir, tmp_path_factory.mktemp("toolmodel") / "tiny-tools")


@pytest.fixture(scope="module")
def tool_model(api_server, tool_model_dir) -> str:
    register(api_server.data_dir, "tiny-tools", tool_model_dir)
    return "tiny-tools"


def _args(call) -> dict:
    return json.loads(call.function.arguments)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_tool_choice_required_returns_a_parsed_valid_call(api, tool_model, seed):
    r = api.chat.completions.create(model=tool_model, messages=ASK, tools=[WEATHER, TIME], tool_choice="required",
                                    temperature=1, seed=seed, max_tokens=120, parallel_tool_calls=False)
    choice = r.choices[0]
    assert choice.finish_reason == "tool_calls", choice
    (call,) = choice.message.tool_calls
    assert call.id.startswith("call_") and call.type == "function"
    assert call.function.name in ("get_weather", "get_time")
    args = _args(call)
    if call.function.name == "get_weather":
        assert set(args) == {"city", "unit"} and args["unit"] in ("c", "f") and len(args["city"]) <= 12
    else:
        assert set(args) == {"zone"}
    assert choice.message.content is None


def test_named_function_is_the_one_called(api, tool_model):
    # parallel calls are allowed: the random model may go on adding calls until max_tokens (about a third
    # of seeds do); the answer still ends with the calls it finished (test_tools_default_format.py)
    for seed in (2, 4, 5):
        r = api.chat.completions.create(model=tool_model, messages=ASK, tools=[WEATHER, TIME], temperature=1,
                                        seed=seed, max_tokens=120,
                                        tool_choice={"type": "function", "function": {"name": "get_time"}})
        assert r.choices[0].finish_reason == "tool_calls"
        calls = r.choices[0].message.tool_calls
        assert calls and all(c.function.name == "get_time" and set(_args(c)) == {"zone"} for c in calls)


def test_streamed_tool_call_deltas_reassemble_to_the_same_call(api, tool_model):
    kw = dict(model=tool_model, messages=ASK, tools=[WEATHER], tool_choice="required", temperature=1, seed=7,
              max_tokens=120, parallel_tool_calls=False)
    whole = api.chat.completions.create(**kw).choices[0].message.tool_calls[0]
    calls: dict[int, dict] = {}
    finish, firsts = None, []
    for chunk in api.chat.completions.create(stream=True, **kw):
        if not chunk.choices:
            continue
        c = chunk.choices[0]
        for d in c.delta.tool_calls or []:
            if d.id is not None:  # a call opens with id, type, name and empty arguments
                firsts.append(d)
                calls[d.index] = {"id": d.id, "name": d.function.name, "arguments": d.function.arguments}
            else:
                assert d.function.name is None
                calls[d.index]["arguments"] += d.function.arguments
        finish = c.finish_reason or finish
    assert finish == "tool_calls"
    assert len(firsts) == 1 and firsts[0].type == "function" and firsts[0].function.arguments == ""
    assert calls[0]["name"] == whole.function.name == "get_weather"
    assert json.loads(calls[0]["arguments"]) == json.loads(whole.function.arguments)
    assert calls[0]["id"].startswith("call_")


def test_round_trip_with_a_tool_message(api, tool_model, tool_model_dir):
    """The call goes back as an assistant message with tool_calls, the result as a `tool` message;
    the next answer renders through the template (its prompt holds both) and is plain text."""
    first = api.chat.completions.create(model=tool_model, messages=ASK, tools=[WEATHER], tool_choice="required",
                                        seed=3, temperature=1, max_tokens=120, parallel_tool_calls=False)
    call = first.choices[0].message.tool_calls[0]
    messages = ASK + [first.choices[0].message.model_dump(exclude_none=True),
                      {"role": "tool", "tool_call_id": call.id, "content": "sunny, 21 degrees"}]
    second = api.chat.completions.create(model=tool_model, messages=messages, tools=[WEATHER], tool_choice="none",
                                         max_tokens=3, temperature=0)
    third = api.chat.completions.create(model=tool_model, messages=messages + [{"role": "user", "content": "ok"}],
                                        tools=[WEATHER], tool_choice="none", max_tokens=3, temperature=0)
    assert second.choices[0].message.tool_calls is None and second.choices[0].message.content is not None
    # The rendered prompt holds the call (arguments as the template writes them) and the result:
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tool_model_dir)
    rendered = tok.apply_chat_template(
        [*ASK, {"role": "assistant", "content": "", "tool_calls": [
            {"id": call.id, "type": "function",
             "function": {"name": call.function.name, "arguments": json.loads(call.function.arguments)}}]},
         {"role": "tool", "tool_call_id": call.id, "content": "sunny, 21 degrees"}],
        tokenize=False, add_generation_prompt=True)
    args = json.dumps(json.loads(call.function.arguments), ensure_ascii=False)  # as the template's tojson writes
    assert f'"name": "get_weather", "arguments": {args}' in rendered
    assert "<tool_response>\nsunny, 21 degrees\n</tool_response>" in rendered
    assert second.usage.prompt_tokens == len(tok(rendered, add_special_tokens=False)["input_ids"])
    assert third.usage.prompt_tokens > second.usage.prompt_tokens


def test_bad_tool_requests_are_400(api, tool_model):
    cases = [
        (dict(tools=[WEATHER], tool_choice={"type": "function", "function": {"name": "nope"}}), "tool_choice"),
        (dict(tool_choice="required"), "tool_choice"),
        (dict(tools=[{"type": "web_search"}]), "tools[0].type"),
        (dict(tools=[{"type": "function", "function": {"name": "f", "parameters": {"not": {"type": "string"}}}}],
              tool_choice="required"), "tools[0].function.parameters"),
        (dict(tools=[WEATHER], tool_choice="sometimes"), "tool_choice"),
    ]
    for kw, param in cases:
        with pytest.raises(openai.BadRequestError) as e:
            api.chat.completions.create(model=tool_model, messages=ASK, max_tokens=4, **kw)
        assert e.value.body["param"] == param, (kw, e.value.body)
        if param.endswith("parameters"):
            assert 'Unimplemented keys: ["not"]' in e.value.body["message"]
