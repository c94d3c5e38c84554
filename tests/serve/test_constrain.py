"""Constrained decoding and tool formats below the API: tool-format detection, the streaming
tool-call parser of each format, the grammars checked against the tiny model's real tokenizer,
and the engine masking only the constrained rows of a mixed batch."""

from __future__ import annotations

import json

import pytest

from openft.data.tool_format import detect
from openft.serve.tools import HERMES, LLAMA3, MISTRAL, ToolCallParser, answer_grammar
from openft.serve.types import GenerationRequest, SamplingParams, ToolChoice
from tests.support.serving import collect, run

TOOLS = [{"type": "function", "function": {"name": "get_weather", "parameters": {
    "type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"],
    "additionalProperties": False}}},
    {"type": "function", "function": {"name": "get_time"}}]


def parse(fmt, text: str, step: int, parallel: bool = True) -> tuple[str, list[dict]]:
    """Feed `text` `step` characters at a time; (content, [{"id","name","arguments"}])."""
    p = ToolCallParser(fmt, parallel)
    content, calls = "", []

    def take(c, pieces):
        nonlocal content
        content += c
        for x in pieces:
            if x.id is not None:
                assert x.call_index == len(calls) and x.arguments == ""
                calls.append({"id": x.id, "name": x.name, "arguments": ""})
            else:
                calls[x.call_index]["arguments"] += x.arguments

    for i in range(0, len(text), step):
        take(*p.push(text[i:i + step]))
    take(*p.finish())
    return content, calls


CASES = [
    (HERMES, 'Let me check.\n<tool_call>\n{"name": "get_weather", "arguments": {"city": "Pa}\\"ris"}}\n</tool_call>\n'
             '<tool_call>\n{"arguments": {}, "name": "get_time"}\n</tool_call>',
     "Let me check.\n", [("get_weather", {"city": 'Pa}"ris'}), ("get_time", {})]),
    (LLAMA3, '{"name": "get_weather", "parameters": {"city": "Oslo"}}; {"name": "get_time", "parameters": {}}',
     "", [("get_weather", {"city": "Oslo"}), ("get_time", {})]),
    (LLAMA3, '<|python_tag|>{"name": "get_weather", "parameters": "{\\"city\\": \\"Lima\\"}"}',
     "", [("get_weather", {"city": "Lima"})]),
    (LLAMA3, '{"answer": 42}', '{"answer": 42}', []),
    (MISTRAL, '[TOOL_CALLS][{"name": "get_weather", "arguments": {"city": "Rome"}}, {"name": "get_time"}]',
     "", [("get_weather", {"city": "Rome"}), ("get_time", {})]),
    (HERMES, "No tools needed: 1 < 2.", "No tools needed: 1 < 2.", []),
]


@pytest.mark.parametrize("fmt, text, content, expected", CASES)
def test_parser_streams_the_same_calls_whatever_the_chunking(fmt, text, content, expected):
    results = [parse(fmt, text, step) for step in (1, 2, 5, len(text))]
    for got_content, calls in results:
        assert got_content == content
        assert [(c["name"], json.loads(c["arguments"])) for c in calls] == expected
        assert all(c["id"].startswith("call_") and len(c["id"]) == 29 for c in calls)
    assert len({tuple(c["arguments"] for c in calls) for _, calls in results}) == 1


def test_parser_keeps_only_the_first_call_without_parallel_calls():
    _, calls = parse(*CASES[0][:2], step=3, parallel=False)
    assert [c["name"] for c in calls] == ["get_weather"]


def test_the_parser_reads_back_what_the_default_format_renders():
    """What the trainer renders for an assistant message with calls (openft.data.tool_format) is
    what the server parses back: the same content, names and arguments, however it is chunked."""
    from openft.data.tool_format import DEFAULT, assistant_text, format_for

    calls = [("get_weather", {"city": "Zürich", "note": "a \"quoted\" }"}), ("get_time", {})]
    message = {"role": "assistant", "content": "Let me look.", "tool_calls": [
        {"id": f"c{i}", "type": "function", "function": {"name": n, "arguments": json.dumps(a)}}
        for i, (n, a) in enumerate(calls)]}
    text = assistant_text(message)
    assert format_for(None) is DEFAULT is HERMES
    for step in (1, 3, len(text)):
        content, got = parse(DEFAULT, text, step)
        assert content == "Let me look.\n"
        assert [(c["name"], json.loads(c["arguments"])) for c in got] == calls


def test_a_later_call_cut_by_max_tokens_is_dropped_and_the_answer_ends_with_the_calls_made():
    """Parallel calls: the first call streams as it grows, a later one is held until complete, so
    an answer cut inside it ends with the finished calls (finish_reason tool_calls), never with a
    truncated call; a first call cut short stays `length`."""
    from openft.serve.tools import ToolStream
    from openft.serve.types import Delta, Finish, ToolCallDelta

    one = '<tool_call>\n{"name": "get_time", "arguments": {"zone": "UTC"}}\n</tool_call>'
    for text, reason, n in [(one + "\n" + one[:30], "tool_calls", 1), (one + "\n" + one[:50], "tool_calls", 1),
                            (one + "\n" + one, "tool_calls", 2), (one[:50], "length", 1)]:
        stream = ToolStream(HERMES, parallel=True)
        items = [x for k in range(0, len(text), 4) for x in stream.convert(Delta(0, text[k:k + 4], [], None))]
        items += stream.convert(Finish(0, "length"))
        opened = [x for x in items if isinstance(x, ToolCallDelta) and x.id is not None]
        assert len(opened) == n and items[-1].finish_reason == reason, text
        args = "".join(x.arguments for x in items if isinstance(x, ToolCallDelta) and x.call_index == n - 1)
        if reason == "tool_calls":
            assert json.loads(args) == {"zone": "UTC"}


def test_formats_are_read_from_the_template(tiny_tokenizer):
    assert detect(tiny_tokenizer.chat_template) is None
    assert detect("{{ '<tool_call>\\n' }}") is HERMES
    assert detect({"default": "x", "tool_use": "[TOOL_CALLS] {{ tools }}"}) is MISTRAL
    assert detect("<|start_header_id|>ipython<|end_header_id|> {\"name\": ..., \"parameters\": ...}") is LLAMA3


@pytest.fixture(scope="module")
def ll_tokenizer(tiny_tokenizer):
    import llguidance.hf

    return llguidance.hf.from_tokenizer(tiny_tokenizer)


def accepts(ll_tokenizer, tiny_tokenizer, lark: str, text: str, prefix_ids=()) -> bool:
    """Does the grammar take all of `text` (tokenized as the model would write it)?"""
    from llguidance import LLMatcher

    m = LLMatcher(ll_tokenizer, LLMatcher.grammar_from_lark(lark))
    assert not m.is_error(), m.get_error()
    ids = [*prefix_ids, *tiny_tokenizer(text, add_special_tokens=False)["input_ids"]]
    return m.validate_tokens(ids) == len(ids)


def no_special(text):
    return None


@pytest.mark.parametrize("fmt, good, bad", [
    (HERMES, '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Oslo"}}\n</tool_call>',
     '<tool_call>\n{"name": "get_weather", "arguments": {"town": "Oslo"}}\n</tool_call>'),
    (LLAMA3, '{"name": "get_time", "parameters": {}}', '{"name": "get_date", "parameters": {}}'),
    (MISTRAL, '[TOOL_CALLS][{"name": "get_weather", "arguments": {"city": "Rome"}}]', '[TOOL_CALLS][]'),
])
def test_required_grammar_takes_only_valid_calls(ll_tokenizer, tiny_tokenizer, fmt, good, bad):
    lark, param = answer_grammar(fmt, TOOLS, ToolChoice("required"), None, no_special)
    assert param == "tools"
    assert accepts(ll_tokenizer, tiny_tokenizer, lark, good)
    assert not accepts(ll_tokenizer, tiny_tokenizer, lark, bad)
    assert not accepts(ll_tokenizer, tiny_tokenizer, lark, "Sure, " + good)


def test_after_each_complete_call_the_answer_may_end_or_call_again(tiny_tokenizer):
    """The end-of-calls point: under tool_choice required with parallel calls, a complete call is
    followed by end-of-turn (the EOS token) or a newline starting the next block, nothing else;
    inside a call the answer cannot end."""
    import torch

    from openft.serve.constrain import Guide

    eos = tiny_tokenizer.eos_token_id
    guide = Guide(tiny_tokenizer, len(tiny_tokenizer), {eos})
    lark, param = answer_grammar(HERMES, TOOLS, ToolChoice("required"), None, no_special)
    call = '<tool_call>\n{"name": "get_time", "arguments": {}}\n</tool_call>'

    def allowed(text: str) -> list[int]:
        m = guide.matcher(guide.compile(lark, param))
        for t in tiny_tokenizer(text, add_special_tokens=False)["input_ids"]:
            m.consume(t)
        logits = torch.zeros(1, len(tiny_tokenizer))
        guide.mask(logits, [(m, 0)])
        return torch.isfinite(logits[0]).nonzero().flatten().tolist()

    assert sorted(allowed(call)) == sorted([eos, *tiny_tokenizer("\n", add_special_tokens=False)["input_ids"]])
    assert eos not in allowed(call[:30]) and eos in allowed(call + "\n" + call)


def test_named_function_grammar_takes_only_that_function(ll_tokenizer, tiny_tokenizer):
    lark, _ = answer_grammar(HERMES, TOOLS, ToolChoice("function", "get_time"), None, no_special)
    call = '<tool_call>\n{{"name": "{}", "arguments": {}}}\n</tool_call>'
    assert accepts(ll_tokenizer, tiny_tokenizer, lark, call.format("get_time", "{}"))
    assert not accepts(ll_tokenizer, tiny_tokenizer, lark, call.format("get_weather", '{"city": "x"}'))


def test_auto_grammar_leaves_text_free_but_an_opened_call_valid(ll_tokenizer, tiny_tokenizer):
    lark, _ = answer_grammar(HERMES, TOOLS, ToolChoice("auto"), None, no_special)
    assert accepts(ll_tokenizer, tiny_tokenizer, lark, "Any text at all, even <tool_ and {json}.")
    assert accepts(ll_tokenizer, tiny_tokenizer, lark,
                   'Checking.\n<tool_call>\n{"name": "get_time", "arguments": {}}\n</tool_call>')
    assert not accepts(ll_tokenizer, tiny_tokenizer, lark, "Checking.\n<tool_call>\nnot a call")
    two = '<tool_call>\n{"name": "get_time", "arguments": {}}\n</tool_call>\n' * 2
    assert accepts(ll_tokenizer, tiny_tokenizer, lark, two.rstrip())
    assert not accepts(ll_tokenizer, tiny_tokenizer, lark, two + "and some text after the calls")
    single, _ = answer_grammar(HERMES, TOOLS, ToolChoice("auto", parallel=False), None, no_special)
    assert not accepts(ll_tokenizer, tiny_tokenizer, single, two.rstrip())
    # with the opener as one special token (Mistral's [TOOL_CALLS]): id 0 stands in for it here
    lark, _ = answer_grammar(MISTRAL, TOOLS, ToolChoice("auto"), None, lambda text: 0)
    assert accepts(ll_tokenizer, tiny_tokenizer, lark, "plain answer")
    assert accepts(ll_tokenizer, tiny_tokenizer, lark, '[{"name": "get_time", "arguments": {}}]', prefix_ids=[0])
    assert not accepts(ll_tokenizer, tiny_tokenizer, lark, '[{"name": "nope"', prefix_ids=[0])
    # llama3 calls open with a bare "{": auto leaves its answers free
    assert answer_grammar(LLAMA3, TOOLS, ToolChoice("auto"), None, no_special)[0] is None


def test_constrained_rows_do_not_change_the_others(engine_factory):
    """A seeded free request writes the same text alone and beside constrained ones: the mask
    touches only the constrained rows of the batch."""
    import asyncio

    engine = engine_factory()
    msgs = [{"role": "user", "content": "Hello"}]
    schema = {"type": "object", "properties": {"n": {"type": "integer", "minimum": 0, "maximum": 9}},
              "required": ["n"], "additionalProperties": False}

    def free():
        return GenerationRequest("openft-tiny", messages=msgs, params=SamplingParams(max_tokens=12, seed=5))

    def constrained(seed):
        return GenerationRequest("openft-tiny", messages=msgs,
                                 params=SamplingParams(max_tokens=40, seed=seed, temperature=1, json_schema=schema))

    alone = run(collect(engine, free()))[0][0]

    async def together():
        return await asyncio.gather(collect(engine, constrained(1)), collect(engine, free()),
                                    collect(engine, constrained(2)))

    c1, mixed, c2 = run(together())
    assert mixed[0][0] == alone
    for texts, finishes, _, _ in (c1, c2):
        assert finishes[0] == "stop" and 0 <= json.loads(texts[0])["n"] <= 9


def test_a_matcher_in_error_allows_only_end_of_sequence(tiny_tokenizer):
    """Never a row of -inf (NaN probabilities would fail the whole batch): llguidance lets a matcher
    in an error state end its answer, and `Guide.mask` passes that on."""
    import torch

    from openft.serve.constrain import Guide, lark_grammar

    guide = Guide(tiny_tokenizer, len(tiny_tokenizer), {tiny_tokenizer.eos_token_id})
    ok = guide.matcher(guide.compile(lark_grammar(json_schema={"type": "object"}), "response_format"))
    broken = guide.matcher(guide.compile(lark_grammar(json_schema={"type": "object"}), "response_format"))
    assert not broken.m.consume_token(tiny_tokenizer("hello", add_special_tokens=False)["input_ids"][0])
    logits = torch.zeros(3, len(tiny_tokenizer))
    guide.mask(logits, [(ok, 0), (broken, 2)])
    assert torch.isfinite(logits[1]).all()                       # an unconstrained row is untouched
    assert torch.isfinite(logits[2]).nonzero().flatten().tolist() == [tiny_tokenizer.eos_token_id]
    first = torch.isfinite(logits[0]).nonzero().flatten().tolist()
    assert first and all(tiny_tokenizer.decode([t]).lstrip().startswith("{") for t in first)


def test_added_tokens_that_are_not_special_are_text_to_the_grammar(tiny_model_dir):
    """Qwen's `<tool_call>` is an added, not special, token: the grammar's `<tool_call>` text must
    take it as one token (llguidance alone allows it in the mask, then fails to consume it)."""
    from llguidance import LLMatcher
    from transformers import AutoTokenizer

    from openft.serve.constrain import grammar_tokenizer

    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    tok.add_tokens(["<tool_call>", " spaced word"])
    call, spaced = tok.convert_tokens_to_ids(["<tool_call>", " spaced word"])
    ll = grammar_tokenizer(tok, len(tok), [tok.eos_token_id])
    m = LLMatcher(ll, LLMatcher.grammar_from_lark('start: "<tool_call>\\n" " spaced word"'))
    assert m.consume_tokens([call, *tok("\n", add_special_tokens=False)["input_ids"], spaced]), m.get_error()
    assert m.is_accepting()
