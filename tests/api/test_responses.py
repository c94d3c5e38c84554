"""The Responses API (`/v1/responses`) through the official SDK against a live server and the tiny
model: create with text / message input and instructions, max_output_tokens -> incomplete,
retrieve, delete, input_items, previous_response_id chaining, streaming events in OpenAI's order
(raw and through the SDK's `responses.stream` accumulator), 400s naming what openft refuses, and
another project's ids as 404s. Generation is the chat route's: each answer is checked against the
chat completion of the same conversation at temperature 0."""

from __future__ import annotations

import json

import openai
import pytest

MODEL = "openft-tiny"
GREEDY = dict(model=MODEL, temperature=0)


def chat(api, messages, max_tokens):
    r = api.chat.completions.create(messages=messages, max_tokens=max_tokens, **GREEDY)
    return r.choices[0], r.usage


def test_create_with_text_input_matches_chat(api):
    r = api.responses.create(input="Say something.", max_output_tokens=5, **GREEDY)
    assert r.id.startswith("resp_") and r.object == "response" and r.model == MODEL and r.created_at > 0
    (item,) = r.output
    assert item.type == "message" and item.role == "assistant" and item.id.startswith("msg_")
    assert [c.type for c in item.content] == ["output_text"]
    choice, usage = chat(api, [{"role": "user", "content": "Say something."}], 5)
    assert r.output_text == choice.message.content
    assert r.usage.input_tokens == usage.prompt_tokens and r.usage.output_tokens == usage.completion_tokens
    assert r.usage.total_tokens == r.usage.input_tokens + r.usage.output_tokens
    assert r.usage.input_tokens_details.cached_tokens == 0 and r.usage.output_tokens_details.reasoning_tokens == 0
    assert r.store is True and r.temperature == 0 and r.tool_choice == "auto" and r.tools == []
    assert r.text.format.type == "text"


def test_message_input_with_instructions_and_content_parts(api):
    parts = [{"type": "input_text", "text": "Hello "}, {"type": "input_text", "text": "there."}]
    user = {"role": "user", "content": parts}
    r = api.responses.create(input=[user], instructions="Be brief.", max_output_tokens=4, **GREEDY)
    choice, usage = chat(api, [{"role": "system", "content": "Be brief."},
                               {"role": "user", "content": "Hello there."}], 4)
    assert r.output_text == choice.message.content and r.usage.input_tokens == usage.prompt_tokens
    assert r.instructions == "Be brief."
    # a developer message is a system message to the chat template, as in chat completions
    dev = api.responses.create(input=[{"role": "developer", "content": "Be brief."},
                                      {"role": "user", "content": "Hello there."}], max_output_tokens=4, **GREEDY)
    assert dev.output_text == r.output_text and dev.usage.input_tokens == r.usage.input_tokens


def test_max_output_tokens_makes_an_incomplete_response(api):
    r = api.responses.create(input="Count to one hundred.", max_output_tokens=3, **GREEDY)
    assert r.status == "incomplete" and r.incomplete_details.reason == "max_output_tokens"
    assert r.usage.output_tokens == 3 and r.output[0].status == "incomplete" and r.max_output_tokens == 3


def test_retrieve_delete_and_input_items(api):
    r = api.responses.create(input="Say something.", max_output_tokens=4, metadata={"k": "v"}, **GREEDY)
    got = api.responses.retrieve(r.id)
    assert got.model_dump() == r.model_dump() and got.metadata == {"k": "v"}
    items = api.responses.input_items.list(r.id)
    assert [(i.type, i.role, i.content[0].text) for i in items.data] == [("message", "user", "Say something.")]
    with pytest.raises(openai.BadRequestError) as e:  # retrieving as a stream is not implemented
        api.responses.retrieve(r.id, stream=True)
    assert e.value.body["param"] == "stream"
    with pytest.raises(openai.BadRequestError):  # only background responses can be cancelled
        api.responses.cancel(r.id)
    assert api.responses.delete(r.id) is None
    with pytest.raises(openai.NotFoundError):
        api.responses.retrieve(r.id)
    with pytest.raises(openai.NotFoundError) as e:
        api.responses.create(input="again", previous_response_id=r.id, **GREEDY)
    assert e.value.body["param"] == "previous_response_id" and e.value.body["code"] == "previous_response_not_found"
    with pytest.raises(openai.NotFoundError):
        api.responses.delete(r.id)


def test_store_false_is_not_kept(api):
    r = api.responses.create(input="Say something.", max_output_tokens=2, store=False, **GREEDY)
    assert r.store is False
    with pytest.raises(openai.NotFoundError):
        api.responses.retrieve(r.id)


def test_previous_response_id_continues_the_conversation(api):
    first = api.responses.create(input="My name is Ada.", instructions="Be brief.", max_output_tokens=4, **GREEDY)
    second = api.responses.create(input="What is my name?", previous_response_id=first.id, max_output_tokens=4,
                                  **GREEDY)
    assert second.previous_response_id == first.id and second.instructions is None
    # the second prompt holds the first turn (its instructions are not carried over, as at OpenAI)
    turn = [{"role": "user", "content": "My name is Ada."}, {"role": "assistant", "content": first.output_text},
            {"role": "user", "content": "What is my name?"}]
    choice, usage = chat(api, turn, 4)
    assert second.usage.input_tokens == usage.prompt_tokens > first.usage.input_tokens
    assert second.output_text == choice.message.content
    items = api.responses.input_items.list(second.id, order="asc")
    assert [(i.type, i.role) for i in items.data] == [("message", "user"), ("message", "assistant"),
                                                      ("message", "user")]
    assert items.data[1].id == first.output[0].id and items.data[1].content[0].text == first.output_text
    newest = api.responses.input_items.list(second.id, limit=1)  # desc by default
    assert [i.content[0].text for i in newest.data] == ["What is my name?"] and newest.has_more
    rest = api.responses.input_items.list(second.id, after=newest.data[0].id)
    assert [i.role for i in rest.data] == ["assistant", "user"] and not rest.has_more


def test_function_call_items_become_tool_messages(api):
    """A function_call / function_call_output round trip reaches the model as the assistant's
    tool call and the tool's answer, exactly as the chat route renders them."""
    call = {"type": "function_call", "call_id": "call_1", "name": "get_weather", "arguments": '{"city": "Oslo"}'}
    out = {"type": "function_call_output", "call_id": "call_1", "output": "12 degrees"}
    r = api.responses.create(input=[{"role": "user", "content": "Weather in Oslo?"}, call, out],
                             max_output_tokens=3, **GREEDY)
    messages = [{"role": "user", "content": "Weather in Oslo?"},
                {"role": "assistant", "content": None, "tool_calls": [
                    {"id": "call_1", "type": "function", "function": {"name": "get_weather",
                                                                      "arguments": '{"city": "Oslo"}'}}]},
                {"role": "tool", "tool_call_id": "call_1", "content": "12 degrees"}]
    choice, usage = chat(api, messages, 3)
    assert r.usage.input_tokens == usage.prompt_tokens and r.output_text == choice.message.content
    kinds = [i.type for i in api.responses.input_items.list(r.id, order="asc").data]
    assert kinds == ["message", "function_call", "function_call_output"]


def _events(api, **kw):
    return list(api.responses.create(stream=True, **kw))


def test_streaming_events_in_openai_order(api):
    kw = dict(input="Say something.", max_output_tokens=6, **GREEDY)
    plain = api.responses.create(**kw)
    events = _events(api, **kw)
    types = [e.type for e in events]
    n_deltas = types.count("response.output_text.delta")
    assert types == (["response.created", "response.in_progress", "response.output_item.added",
                      "response.content_part.added"] + ["response.output_text.delta"] * n_deltas
                     + ["response.output_text.done", "response.content_part.done", "response.output_item.done",
                        "response.incomplete"])
    assert n_deltas >= 1 and [e.sequence_number for e in events] == list(range(len(events)))
    created, final = events[0].response, events[-1].response
    assert created.status == "in_progress" and created.output == [] and final.id == created.id
    item_id = events[2].item.id
    assert all(e.item_id == item_id for e in events[3:-2] if hasattr(e, "item_id"))
    text = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    assert text == plain.output_text == events[-4].text == final.output_text
    assert final.status == "incomplete" and final.usage.output_tokens == 6
    assert final.incomplete_details.reason == "max_output_tokens"
    assert api.responses.retrieve(final.id).model_dump() == final.model_dump()  # stored before its event


def test_sdk_stream_helper_accumulates(api):
    """`client.responses.stream` checks the order (output item before its content, ids kept) and
    builds snapshots; it needs every event in its place to get there."""
    with api.responses.stream(input="Say something.", max_output_tokens=5, **GREEDY) as stream:
        deltas = [e for e in stream if e.type == "response.output_text.delta"]
    assert deltas and deltas[-1].snapshot == "".join(d.delta for d in deltas)
    assert deltas[-1].snapshot == api.responses.create(input="Say something.", max_output_tokens=5,
                                                       **GREEDY).output_text


def test_stream_chaining_and_logprobs(api):
    first = _events(api, input="My name is Ada.", max_output_tokens=3, **GREEDY)[-1].response
    second = api.responses.create(input="And yours?", previous_response_id=first.id, max_output_tokens=3,
                                  include=["message.output_text.logprobs"], top_logprobs=2, **GREEDY)
    assert second.usage.input_tokens > first.usage.input_tokens
    lps = second.output[0].content[0].logprobs
    assert len(lps) == 3 and all(len(t.top_logprobs) == 2 and t.logprob <= 0 for t in lps)
    assert "".join(t.token for t in lps) == second.output_text
    deltas = [e for e in _events(api, input="And yours?", previous_response_id=first.id, max_output_tokens=3,
                                 include=["message.output_text.logprobs"], top_logprobs=2, **GREEDY)
              if e.type == "response.output_text.delta"]
    assert [t.token for d in deltas for t in d.logprobs] == [t.token for t in lps]


@pytest.mark.parametrize("kwargs,param", [
    (dict(tools=[{"type": "web_search"}]), "tools[0].type"),
    (dict(tools=[{"type": "file_search", "vector_store_ids": ["vs_1"]}]), "tools[0].type"),
    (dict(tools=[{"type": "code_interpreter", "container": {"type": "auto"}}]), "tools[0].type"),
    (dict(tools=[{"type": "function", "name": "f", "parameters": {}}, {"type": "image_generation"}]),
     "tools[1].type"),
    (dict(tools=[{"type": "mcp", "server_label": "x", "server_url": "https://x"}]), "tools[0].type"),
    (dict(tool_choice={"type": "web_search_preview"}), "tool_choice"),
    (dict(background=True), "background"),
    (dict(conversation="conv_1"), "conversation"),
    (dict(reasoning={"effort": "high"}), "reasoning.effort"),
    (dict(include=["file_search_call.results"]), "include[0]"),
    (dict(truncation="auto"), "truncation"),
    (dict(prompt={"id": "pmpt_1"}), "prompt"),
    (dict(input=[{"role": "user", "content": [{"type": "input_image", "image_url": "https://x/y.png"}]}]),
     "input[0].content[0].type"),
    (dict(input=[{"type": "reasoning", "summary": []}]), "input[0].type"),
    (dict(input=[{"type": "item_reference", "id": "msg_1"}]), "input[0].type"),
    (dict(extra_body={"frequency_penalty": 1}), "frequency_penalty"),
])
def test_refused_with_a_400_naming_the_param(api, kwargs, param):
    kwargs = {"input": "hi", **kwargs}
    with pytest.raises(openai.BadRequestError) as e:
        api.responses.create(model=MODEL, max_output_tokens=2, **kwargs)
    assert e.value.body["param"] == param, e.value.body


def test_chat_errors_name_the_responses_param(api):
    with pytest.raises(openai.NotFoundError) as e:
        api.responses.create(model="no-such-model", input="hi")
    assert e.value.body["param"] == "model"
    with pytest.raises(openai.BadRequestError) as e:
        api.responses.create(input="hi " * 3000, **GREEDY)  # beyond the tiny model's 2048-token context
    assert e.value.body["param"] == "input", e.value.body


def test_other_project_gets_404(api, other_api):
    r = api.responses.create(input="Say something.", max_output_tokens=2, **GREEDY)
    for call in (lambda: other_api.responses.retrieve(r.id), lambda: other_api.responses.delete(r.id),
                 lambda: other_api.responses.input_items.list(r.id),
                 lambda: other_api.responses.create(input="x", previous_response_id=r.id, **GREEDY)):
        with pytest.raises(openai.NotFoundError):
            call()
    assert api.responses.retrieve(r.id).id == r.id  # still there for its owner


# -- tools and structured outputs: whatever the chat route does, the Responses API does too ------
# The tiny model's template has no tool-call format of its own: openft's default one is used (a model
# with its own: test_responses_tools.py). These compare with chat completions of the same request,
# whichever way it goes (a call, or a 400 that /v1/responses must give too, naming its own parameter).

WEATHER = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"],
           "additionalProperties": False}
ASK = [{"role": "user", "content": "What is the weather in Oslo?"}]


def _chat_or_refusal(api, **kw):
    try:
        return api.chat.completions.create(messages=ASK, **GREEDY, **kw), None
    except openai.BadRequestError as e:
        return None, e


def _same_refusal(call, chat_error, param_prefix):
    with pytest.raises(openai.BadRequestError) as e:
        call()
    assert e.value.body["message"] == chat_error.body["message"]
    assert (e.value.body["param"] or "").startswith(param_prefix), e.value.body


@pytest.mark.parametrize("choice", ["auto", "required", {"type": "function", "name": "get_weather"}])
def test_function_tools_as_chat_completions_answer(api, choice):
    chat_choice = choice if isinstance(choice, str) else {"type": "function", "function": {"name": "get_weather"}}
    ref, err = _chat_or_refusal(api, max_tokens=24, tool_choice=chat_choice, tools=[
        {"type": "function", "function": {"name": "get_weather", "parameters": WEATHER, "strict": True}}])
    kw = dict(input=ASK, max_output_tokens=24, tool_choice=choice, **GREEDY,
              tools=[{"type": "function", "name": "get_weather", "parameters": WEATHER, "strict": True}])
    if err is not None:
        _same_refusal(lambda: api.responses.create(**kw), err, "tool")
        return
    msg = ref.choices[0].message
    expected = [(t.function.name, t.function.arguments) for t in msg.tool_calls or []]
    r = api.responses.create(**kw)
    assert [(o.name, o.arguments) for o in r.output if o.type == "function_call"] == expected
    assert r.output_text == (msg.content or "") and r.usage.input_tokens == ref.usage.prompt_tokens
    if expected:
        assert all(o.call_id and o.id.startswith("fc_") for o in r.output if o.type == "function_call")
    events = list(api.responses.create(stream=True, **kw))
    done = [(e.item.name, e.item.arguments) for e in events
            if e.type == "response.output_item.done" and e.item.type == "function_call"]
    assert done == expected
    args_done = [e.arguments for e in events if e.type == "response.function_call_arguments.done"]
    assert args_done == [a for _, a in expected]


@pytest.mark.parametrize("fmt", [
    {"type": "json_object"},
    {"type": "json_schema", "name": "weather", "strict": True, "schema": WEATHER}])
def test_text_format_as_chat_completions_answer(api, fmt):
    chat_fmt = fmt if fmt["type"] == "json_object" else {
        "type": "json_schema", "json_schema": {k: v for k, v in fmt.items() if k != "type"}}
    ref, err = _chat_or_refusal(api, max_tokens=40, response_format=chat_fmt)
    kw = dict(input=ASK, max_output_tokens=40, text={"format": fmt}, **GREEDY)
    if err is not None:
        _same_refusal(lambda: api.responses.create(**kw), err, "text.format")
        return
    r = api.responses.create(**kw)
    assert r.output_text == ref.choices[0].message.content and r.text.format.type == fmt["type"]
    if ref.choices[0].finish_reason == "stop":
        assert isinstance(json.loads(r.output_text), dict)
    streamed = "".join(e.delta for e in api.responses.create(stream=True, **kw)
                       if e.type == "response.output_text.delta")
    assert streamed == r.output_text
