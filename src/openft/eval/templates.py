"""OpenAI's eval templates: `{{item.field}}`, `{{item.a.b}}`, `{{sample.output_text}}`,
`{{sample.choices[0].message.content}}`-style paths are not supported beyond `sample.output_text`,
`sample.output_json` and `sample.model`.

`fields(text)` lists the references a template makes (checked against the item schema at
creation); `render(text, item, sample)` fills them and raises MissingField for a reference the
item lacks (that item then errors, the run goes on). Knows nothing about graders or HTTP.
"""

from __future__ import annotations

import json
import re

_REF = re.compile(r"\{\{\s*([A-Za-z_][\w.]*)\s*\}\}")


class MissingField(KeyError):
    def __init__(self, ref: str):
        super().__init__(ref)
        self.ref = ref

    def __str__(self) -> str:
        return f"the item has no value for {{{{{self.ref}}}}}"


def fields(text: str) -> list[str]:
    """The references of a template, e.g. ["item.question", "sample.output_text"]."""
    return _REF.findall(text or "")


def _lookup(ref: str, item: dict, sample: dict | None):
    root, _, rest = ref.partition(".")
    if root == "item":
        cur = item
    elif root == "sample":
        if sample is None:
            raise MissingField(ref)
        cur = sample
    else:
        raise MissingField(ref)
    if not rest:
        return cur
    for part in rest.split("."):
        if not isinstance(cur, dict) or part not in cur:
            raise MissingField(ref)
        cur = cur[part]
    return cur


def render(text: str, item: dict, sample: dict | None = None) -> str:
    def sub(m: re.Match) -> str:
        value = _lookup(m.group(1), item, sample)
        return value if isinstance(value, str) else json.dumps(value)

    return _REF.sub(sub, text)


def check_refs(text: str, item_schema: dict | None, *, sample_allowed: bool, param: str) -> None:
    """400 (InvalidRequest naming `param`) for a reference the item schema lacks, or a `sample.`
    reference where no sample exists. A schema without `properties` accepts any item field."""
    from openft.errors import InvalidRequest

    props = (item_schema or {}).get("properties")
    for ref in fields(text):
        root, _, rest = ref.partition(".")
        if root == "sample":
            if not sample_allowed:
                raise InvalidRequest(f"The template refers to {{{{{ref}}}}}, but this eval has no sample "
                                     "(set data_source_config.include_sample_schema to true).", param=param)
            if rest.split(".")[0] not in ("output_text", "output_json", "model", "choices", "output_tools"):
                raise InvalidRequest(f"The template refers to {{{{{ref}}}}}, which is not a sample field "
                                     "(sample.output_text, sample.output_json).", param=param)
        elif root == "item":
            top = rest.split(".")[0]
            if props is not None and top and top not in props:
                raise InvalidRequest(f"The template refers to {{{{{ref}}}}}, but the item schema has no property "
                                     f"{top!r} (it has: {', '.join(sorted(props)) or 'none'}).", param=param)
        else:
            raise InvalidRequest(f"The template refers to {{{{{ref}}}}}; references start with item. or sample.",
                                 param=param)
