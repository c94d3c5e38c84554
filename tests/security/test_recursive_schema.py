"""A JSON schema with no finite instance (issue 21, section 4, item 2): `{"a": {"$ref": "#"}}` with
`a` required recurses forever, so no answer can ever complete. It is a 400 at validation naming
`response_format` (Chat Completions) or `text.format` (Responses), with a short message, never a
500 that dumps the grammar engine's state; the same schema with the recursion optional is fine."""

from __future__ import annotations

import openai
import pytest

RECURSIVE = {"type": "object", "properties": {"a": {"$ref": "#"}}, "required": ["a"]}
VIA_DEFS = {"$defs": {"node": {"type": "object", "properties": {"next": {"$ref": "#/$defs/node"}},
                               "required": ["next"]}},
            "type": "object", "properties": {"head": {"$ref": "#/$defs/node"}}, "required": ["head"]}
ARRAY = {"type": "array", "items": {"$ref": "#"}, "minItems": 1}


@pytest.mark.parametrize("schema", [RECURSIVE, VIA_DEFS, ARRAY], ids=["root", "defs", "array"])
def test_schema_without_a_finite_instance_is_a_400_naming_response_format(sec_server, schema):
    api = sec_server.client()
    with pytest.raises(openai.BadRequestError) as e:
        api.chat.completions.create(model="openft-tiny", max_tokens=8, messages=[{"role": "user", "content": "hi"}],
                                    response_format={"type": "json_schema",
                                                     "json_schema": {"name": "r", "schema": schema}})
    err = e.value.body
    assert err["param"] == "response_format.json_schema.schema", err
    assert "finite" in err["message"] and len(err["message"]) < 400, err


def test_the_same_in_responses_text_format(sec_server):
    api = sec_server.client()
    with pytest.raises(openai.BadRequestError) as e:
        api.responses.create(model="openft-tiny", input="hi", max_output_tokens=16,
                             text={"format": {"type": "json_schema", "name": "r", "schema": RECURSIVE}})
    err = e.value.body
    assert err["param"].startswith("text.format"), err
    assert "finite" in err["message"] and len(err["message"]) < 400, err


def test_optional_recursion_is_accepted(sec_server):
    tree = {"type": "object", "properties": {"v": {"type": "integer"}, "kids": {"type": "array",
                                                                                 "items": {"$ref": "#"}}},
            "required": ["v"]}
    either = {"anyOf": [{"$ref": "#"}, {"type": "string"}]}
    api = sec_server.client()
    for schema in (tree, either):
        r = api.chat.completions.create(model="openft-tiny", max_tokens=8, messages=[{"role": "user", "content": "x"}],
                                        response_format={"type": "json_schema",
                                                         "json_schema": {"name": "t", "schema": schema}})
        assert r.choices[0].finish_reason in ("stop", "length")
