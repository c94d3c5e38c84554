"""Function calling and structured outputs through the Responses API, end to end: the tiny model
with a Hermes (`<tool_call>`) chat template, registered as a local model, is forced to call a tool
(`tool_choice` required / named), and the call comes back as `function_call` items (non-streamed,
streamed, and through the SDK's `responses.stream` and `responses.parse`), then goes back in as a
`function_call_output` with `previous_response_id`. Each answer is the chat route's for the same
request; where the chat route refuses (a build without tool calls or constrained decoding), the
Responses API must refuse the same way, naming its own parameter."""

from __future__ import annotations

import json
import shutil
from typing import Literal

import openai
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

# Qwen2.5's tool format, cut down: the tools in the system turn, calls in <tool_call> tags,
# tool results as <tool_response> in a user turn.
HERMES_TEMPLATE = """{%- if tools %}<|im_start|>system
You can call functions. Signatures:
<tools>
{%- for tool in tools %}
{{ tool | tojson }}
{%- endfor %}
</tools>
Call one as <tool_call>
{"name": <function-name>, "arguments": <args-json-object>}
</tool_call><|im_end|>
{% endif %}
{%- for message in messages %}
{%- if message.role == 'tool' %}<|im_start|>user
<tool_response>
{{ message.content }}
</tool_response><|im_end|>
{% elif message.role == 'assistant' and message.tool_calls %}<|im_start|>assistant
{{ message.content or '' }}
{%- for tc in message.tool_calls %}<tool_call>
{"name": "{{ tc.function.name }}", "arguments": {{ tc.function.arguments | tojson }}}
</tool_call>
{%- endfor %}<|im_end|>
{% else %}<|im_start|>{{ message.role }}
{{ message.content }}<|im_end|>
{% endif %}
{%- endfor %}
{%- if add_generation_prompt %}<|im_start|>assistant
{% endif %}"""


@pytest.fixture(scope="module")
def hermes(api_server, tiny_model_dir, tmp_path_factory):
    """The tiny model under another name, with a chat template that has a tool-call format."""
    from openft.config import Settings
    from openft.models import register_local

    folder = tmp_path_factory.mktemp("tiny-hermes") / "model"
    shutil.copytree(tiny_model_dir, folder)
    (folder / "chat_template.jinja").write_text(HERMES_TEMPLATE)
    config = json.loads((folder / "tokenizer_config.json").read_text())
    config.pop("chat_template", None)
    (folder / "tokenizer_config.json").write_text(json.dumps(config))
    register_local(Settings(data_dir=api_server.data_dir), MODEL, str(folder))
    return MODEL


def _chat_or_refusal(api, **kw):
    try:
        return api.chat.completions.create(**GREEDY, **kw), None
    except openai.BadRequestError as e:
        return None, e


def _same_refusal(call, chat_error, param_prefix):
    with pytest.raises(openai.BadRequestError) as e:
        call()
    assert e.value.body["message"] == chat_error.body["message"]
    assert (e.value.body["param"] or "").startswith(param_prefix), e.value.body


def _calls(response):
    return [(o.name, o.arguments) for o in response.output if o.type == "function_call"]


def test_forced_tool_call_and_its_output_round_trip(api, hermes):
    ref, err = _chat_or_refusal(api, messages=ASK, tools=CHAT_TOOLS, tool_choice="required", max_tokens=60,
                                parallel_tool_calls=False)
    kw = dict(input=ASK, tools=TOOLS, tool_choice="required", parallel_tool_calls=False, max_output_tokens=60,
              **GREEDY)
    if err is not None:
        _same_refusal(lambda: api.responses.create(**kw), err, "tool")
        return
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
    chat2, _ = _chat_or_refusal(api, tools=CHAT_TOOLS, max_tokens=4, messages=[
        *ASK, assistant, {"role": "tool", "tool_call_id": call.call_id, "content": "12 degrees"}])
    assert answer.usage.input_tokens == chat2.usage.prompt_tokens


def test_named_tool_choice_streams_through_the_sdk(api, hermes):
    ref, err = _chat_or_refusal(api, messages=ASK, tools=CHAT_TOOLS, max_tokens=60, parallel_tool_calls=False,
                                tool_choice={"type": "function", "function": {"name": "get_weather"}})
    kw = dict(input=ASK, tools=TOOLS, tool_choice={"type": "function", "name": "get_weather"}, max_output_tokens=60,
              parallel_tool_calls=False, **GREEDY)
    if err is not None:
        _same_refusal(lambda: api.responses.create(stream=True, **kw), err, "tool")
        return
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

    ref, err = _chat_or_refusal(api, messages=ASK, max_tokens=60, response_format={
        "type": "json_schema", "json_schema": {"name": "Weather", "schema": to_strict_json_schema(Weather),
                                               "strict": True}})
    if err is not None:
        _same_refusal(lambda: api.responses.parse(input=ASK, text_format=Weather, max_output_tokens=60, **GREEDY),
                      err, "text.format")
        return
    r = api.responses.parse(input=ASK, text_format=Weather, max_output_tokens=60, **GREEDY)
    assert r.output_text == ref.choices[0].message.content
    assert ref.choices[0].finish_reason == "stop" and r.output_parsed.city in ("Oslo", "Rome")
