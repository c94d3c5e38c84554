"""Structured outputs (`response_format` json_object / json_schema) through the official SDK
against a live server. The tiny model has random weights: at temperature 1 it writes noise, so
every answer that parses and matches its schema is the constraint's doing."""

from __future__ import annotations

import json

import openai
import pytest

MODEL = "openft-tiny"
MSG = [{"role": "user", "content": "Describe a person as JSON."}]
PERSON = {"type": "object", "properties": {
    "name": {"type": "string", "maxLength": 10},
    "age": {"type": "integer", "minimum": 0, "maximum": 120},
    "tags": {"type": "array", "items": {"enum": ["a", "b", "c"]}, "maxItems": 3},
    "pet": {"anyOf": [{"type": "null"}, {"type": "object", "properties": {"kind": {"enum": ["cat", "dog"]}},
                                          "required": ["kind"], "additionalProperties": False}]}},
    "required": ["name", "age", "tags", "pet"], "additionalProperties": False}
FORMAT = {"type": "json_schema", "json_schema": {"name": "person", "schema": PERSON, "strict": True}}


def check_person(text: str) -> dict:
    obj = json.loads(text)
    assert set(obj) == {"name", "age", "tags", "pet"}, obj
    assert isinstance(obj["name"], str) and len(obj["name"]) <= 10
    assert isinstance(obj["age"], int) and 0 <= obj["age"] <= 120
    assert isinstance(obj["tags"], list) and len(obj["tags"]) <= 3 and set(obj["tags"]) <= {"a", "b", "c"}
    assert obj["pet"] is None or obj["pet"] in ({"kind": "cat"}, {"kind": "dog"})
    return obj


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_json_schema_output_always_parses_and_matches(api, seed):
    r = api.chat.completions.create(model=MODEL, messages=MSG, response_format=FORMAT, temperature=1, seed=seed,
                                    n=2, max_tokens=200)
    for c in r.choices:
        assert c.finish_reason == "stop", c
        check_person(c.message.content)


def test_json_schema_greedy_and_streamed(api):
    whole = api.chat.completions.create(model=MODEL, messages=MSG, response_format=FORMAT, temperature=0,
                                        max_tokens=200).choices[0].message.content
    check_person(whole)
    parts = [c.choices[0].delta.content or "" for c in api.chat.completions.create(
        model=MODEL, messages=MSG, response_format=FORMAT, temperature=0, max_tokens=200, stream=True) if c.choices]
    assert "".join(parts) == whole


def test_json_schema_with_logprobs_reports_the_models_own(api):
    """The mask decides what is sampled; the logprobs reported are the model's distribution's."""
    r = api.chat.completions.create(model=MODEL, messages=MSG, response_format=FORMAT, temperature=0, max_tokens=200,
                                    logprobs=True, top_logprobs=2)
    check_person(r.choices[0].message.content)
    lps = r.choices[0].logprobs.content
    assert "".join(t.token for t in lps) == r.choices[0].message.content
    # the top alternatives of the unconstrained distribution are not all JSON the schema allows
    assert any(alt.logprob > t.logprob for t in lps for alt in t.top_logprobs)


def test_max_tokens_cuts_a_constrained_answer_with_length(api):
    r = api.chat.completions.create(model=MODEL, messages=MSG, response_format=FORMAT, temperature=1, seed=0,
                                    max_tokens=5)
    assert r.choices[0].finish_reason == "length" and r.usage.completion_tokens == 5
    assert r.choices[0].message.content.startswith('{"name": "')


def _json_object_prefix(text: str, tok) -> bool:
    """Is `text` a prefix of some JSON object? (llguidance's default JSON grammar, any whitespace.)"""
    from llguidance import LLMatcher

    m = LLMatcher(tok, LLMatcher.grammar_from_json_schema({"type": "object"}))
    ids = tok.tokenize_str(text)
    return m.validate_tokens(ids) == len(ids)


def test_json_object_is_always_a_json_object(api, tiny_tokenizer):
    """At temperature 1 a random model's strings run long: answers that end are JSON objects, answers
    cut by max_tokens are the start of one."""
    import llguidance.hf

    tok = llguidance.hf.from_tokenizer(tiny_tokenizer)
    r = api.chat.completions.create(model=MODEL, messages=MSG, response_format={"type": "json_object"},
                                    temperature=1, seed=1, n=4, max_tokens=100)
    finished = [c for c in r.choices if c.finish_reason == "stop"]
    assert finished, [c.message.content[:40] for c in r.choices]
    for c in finished:
        assert isinstance(json.loads(c.message.content), dict)
    for c in r.choices:
        assert _json_object_prefix(c.message.content, tok), c.message.content
    plain = api.chat.completions.create(model=MODEL, messages=MSG, temperature=1, seed=1, n=4, max_tokens=30)
    assert not any(_json_object_prefix(c.message.content, tok) for c in plain.choices)


@pytest.mark.parametrize("fmt, param, words", [
    ({"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "object", "properties": {
        "a": {"type": "string"}}, "if": {"required": ["a"]}, "then": {"required": ["b"]}}}},
     "response_format", ['Unimplemented keys: ["if", "then"]']),
    ({"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "array", "uniqueItems": True}}},
     "response_format", ['"uniqueItems"']),
    ({"type": "json_schema", "json_schema": {"schema": {"type": "object"}}}, "response_format.json_schema", []),
    ({"type": "yaml"}, "response_format", ["yaml"]),
])
def test_unsupported_response_formats_are_400(api, fmt, param, words):
    with pytest.raises(openai.BadRequestError) as e:
        api.chat.completions.create(model=MODEL, messages=MSG, response_format=fmt, max_tokens=4)
    assert e.value.body["param"] == param, e.value.body
    for w in words:
        assert w in e.value.body["message"]


def test_text_response_format_is_plain(api):
    r = api.chat.completions.create(model=MODEL, messages=MSG, response_format={"type": "text"}, max_tokens=3)
    assert r.choices[0].finish_reason == "length"
