"""Tools on a model whose chat template has no tool-call format (openft-tiny, SmolLM2's template,
as the bundled default model): openft's default Hermes/Qwen format (openft.data.tool_format) is
used, through the official SDK against a live server. Chat (non-streamed and streamed) and the
Responses API return parsed calls; the prompt holds the tools, the call and its result exactly
as the trainer renders them; and with parallel calls allowed, a forced answer ends with the calls
the model finished, never a truncated one. The model is random: it writes noise unless constrained."""

from __future__ import annotations

import json

import pytest

from openft.data.tool_format import TOOLS_HEADER, render

MODEL = "openft-tiny"
CITIES = ["Oslo", "Rome"]
WEATHER = {"type": "function", "function": {
    "name": "get_weather", "description": "Current weather in a city.",
    "parameters": {"type": "object", "properties": {"city": {"enum": CITIES}, "unit": {"enum": ["c", "f"]}},
                   "required": ["city", "unit"], "additionalProperties": False}}}
TIME = {"type": "function", "function": {
    "name": "get_time", "parameters": {"type": "object", "properties": {"zone": {"enum": ["UTC", "CET"]}},
                                       "required": ["zone"], "additionalProperties": False}}}
ASK = [{"role": "user", "content": "What is the weather in Oslo?"}]


def valid(name: str, arguments: str) -> bool:
    """Is this a complete call of one of the tools, its arguments valid against the schema?"""
    try:
        args = json.loads(arguments)
    except ValueError:
        return False
    if name == "get_weather":
        return set(args) == {"city", "unit"} and args["city"] in CITIES and args["unit"] in ("c", "f")
    return name == "get_time" and args in ({"zone": "UTC"}, {"zone": "CET"})


@pytest.fixture(scope="module")
def tokenizer(tiny_model_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_model_dir)


def test_forced_call_in_the_default_format(api, tokenizer):
    r = api.chat.completions.create(model=MODEL, messages=ASK, tools=[WEATHER, TIME], tool_choice="required",
                                    parallel_tool_calls=False, temperature=0, max_tokens=60)
    choice = r.choices[0]
    assert choice.finish_reason == "tool_calls", choice
    (call,) = choice.message.tool_calls
    assert call.id.startswith("call_") and valid(call.function.name, call.function.arguments)
    assert choice.message.content is None
    # the prompt is the tools block in the system message, as the trainer renders it
    prompt = render(tokenizer, ASK, [WEATHER, TIME], add_generation_prompt=True)
    assert prompt.startswith("<|im_start|>system\n" + TOOLS_HEADER)
    assert r.usage.prompt_tokens == len(tokenizer(prompt, add_special_tokens=False)["input_ids"])


def test_streamed_call_matches_the_whole_one(api):
    kw = dict(model=MODEL, messages=ASK, tools=[WEATHER], parallel_tool_calls=False, temperature=0, max_tokens=60,
              tool_choice={"type": "function", "function": {"name": "get_weather"}})
    whole = api.chat.completions.create(**kw).choices[0].message.tool_calls[0]
    calls: dict[int, dict] = {}
    finish = None
    for chunk in api.chat.completions.create(stream=True, **kw):
        for d in chunk.choices[0].delta.tool_calls or [] if chunk.choices else []:
            if d.id is not None:
                calls[d.index] = {"name": d.function.name, "arguments": d.function.arguments}
            else:
                calls[d.index]["arguments"] += d.function.arguments
        finish = (chunk.choices[0].finish_reason if chunk.choices else None) or finish
    assert finish == "tool_calls"
    assert list(calls) == [0] and calls[0]["name"] == whole.function.name == "get_weather"
    assert calls[0]["arguments"] == whole.function.arguments and valid("get_weather", whole.function.arguments)


def test_responses_api_calls_tools_on_the_default_format(api):
    ref = api.chat.completions.create(model=MODEL, messages=ASK, tools=[WEATHER], tool_choice="required",
                                      parallel_tool_calls=False, temperature=0, max_tokens=60)
    r = api.responses.create(model=MODEL, input=ASK, tool_choice="required", parallel_tool_calls=False,
                             temperature=0, max_output_tokens=60,
                             tools=[{"type": "function", **WEATHER["function"]}])
    calls = [(o.name, o.arguments) for o in r.output if o.type == "function_call"]
    assert calls == [(c.function.name, c.function.arguments) for c in ref.choices[0].message.tool_calls]
    assert r.status == "completed" and valid(*calls[0])


def test_a_round_trip_renders_the_call_and_its_result(api, tokenizer):
    """The call goes back as an assistant message, the result as a `tool` message: the prompt is
    the trainer's rendering (call block in the assistant turn, `<tool_response>` in a user turn)."""
    first = api.chat.completions.create(model=MODEL, messages=ASK, tools=[WEATHER], tool_choice="required",
                                        parallel_tool_calls=False, temperature=0, max_tokens=60)
    call = first.choices[0].message.tool_calls[0]
    messages = [*ASK, first.choices[0].message.model_dump(exclude_none=True),
                {"role": "tool", "tool_call_id": call.id, "content": "sunny, 21 degrees"}]
    second = api.chat.completions.create(model=MODEL, messages=messages, tools=[WEATHER], tool_choice="none",
                                         max_tokens=3, temperature=0)
    assert second.choices[0].message.tool_calls is None
    prompt = render(tokenizer, [*ASK, {"role": "assistant", "content": None, "tool_calls": [
        {"id": call.id, "type": "function", "function": {"name": call.function.name, "arguments": call.function.arguments}}]},
        {"role": "tool", "tool_call_id": call.id, "content": "sunny, 21 degrees"}], None, add_generation_prompt=True)
    args = json.dumps(json.loads(call.function.arguments))
    assert f'<tool_call>\n{{"name": "get_weather", "arguments": {args}}}\n</tool_call><|im_end|>' in prompt
    assert "<|im_start|>user\n<tool_response>\nsunny, 21 degrees\n</tool_response><|im_end|>" in prompt
    assert second.usage.prompt_tokens == len(tokenizer(prompt, add_special_tokens=False)["input_ids"])


@pytest.mark.parametrize("stream", [False, True])
def test_parallel_forced_calls_end_with_finished_calls(api, stream):
    """tool_choice required with parallel calls allowed: the random model may go on adding calls
    until max_tokens, but the answer holds only complete, schema-valid calls and finishes
    "tool_calls" (the call max_tokens cut is dropped), for every seed."""
    for seed in range(6):
        kw = dict(model=MODEL, messages=ASK, tools=[WEATHER, TIME], tool_choice="required", temperature=1,
                  seed=seed, max_tokens=50)
        if not stream:
            choice = api.chat.completions.create(**kw).choices[0]
            calls = [(c.function.name, c.function.arguments) for c in choice.message.tool_calls]
            finish = choice.finish_reason
        else:
            parts: dict[int, list] = {}
            finish = None
            for chunk in api.chat.completions.create(stream=True, **kw):
                for d in chunk.choices[0].delta.tool_calls or [] if chunk.choices else []:
                    if d.id is not None:
                        parts[d.index] = [d.function.name, d.function.arguments]
                    else:
                        parts[d.index][1] += d.function.arguments
                finish = (chunk.choices[0].finish_reason if chunk.choices else None) or finish
            calls = [tuple(parts[i]) for i in sorted(parts)]
        assert finish == "tool_calls", (seed, calls)
        assert calls and all(valid(n, a) for n, a in calls), (seed, calls)
