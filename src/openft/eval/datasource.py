"""OpenAI's eval data shapes, checked and turned into work: `data_source_config` of an eval and
the `data_source` of a run (`jsonl`, `completions`), and the items they hold.

`eval_config(cfg)` -> the response's data_source_config (a JSON schema with `item` and, when
asked, `sample`). `check_run_source(ds, eval_cfg, param)` validates a run's data source and
returns the parts the executor needs; `parse_items(text)` reads a JSONL file's items (each line
`{"item": {...}, "sample": {...}}` or a bare item object). `item_problem(item, schema)` says why
an item cannot be used at run time (a required field missing). Knows nothing about HTTP or the
database: callers hand in file contents and say whether a model exists.
"""

from __future__ import annotations

from collections.abc import Callable

from openft.errors import InvalidRequest
from openft.eval import templates

SAMPLE_SCHEMA = {
    "type": "object",
    "properties": {
        "model": {"type": "string"},
        "choices": {"type": "array", "items": {"type": "object", "properties": {
            "message": {"type": "object", "properties": {"role": {"type": "string", "enum": ["assistant"]},
                                                         "content": {"type": ["string", "null"]},
                                                         "refusal": {"type": ["boolean", "null"]}},
                        "required": ["role"]},
            "finish_reason": {"type": "string"}}, "required": ["index", "message", "finish_reason"]}},
        "output_text": {"type": "string"},
        "output_json": {"type": "object"},
    },
    "required": ["model", "choices"],
}


def eval_config(cfg) -> dict:
    """The stored/returned data_source_config of a create request (400 naming the param)."""
    if not isinstance(cfg, dict):
        raise InvalidRequest("data_source_config must be an object.", param="data_source_config", code="invalid_type")
    kind = cfg.get("type")
    if kind in ("logs", "stored_completions"):
        raise InvalidRequest(f"data_source_config type {kind!r} is not supported: openft stores no completions or "
                             "logs to evaluate; use type 'custom'.", param="data_source_config.type",
                             code="unsupported_value")
    if kind != "custom":
        raise InvalidRequest(f"Unknown data_source_config type {kind!r}; use 'custom'.",
                             param="data_source_config.type", code="invalid_value")
    unknown = set(cfg) - {"type", "item_schema", "include_sample_schema"}
    if unknown:
        raise InvalidRequest(f"Unrecognized argument: {sorted(unknown)[0]}",
                             param=f"data_source_config.{sorted(unknown)[0]}", code="unknown_parameter")
    schema = cfg.get("item_schema")
    if not isinstance(schema, dict):
        raise InvalidRequest("Missing required parameter: 'data_source_config.item_schema' (a JSON schema object).",
                             param="data_source_config.item_schema", code="missing_required_parameter")
    props = schema.get("properties")
    if props is not None and not isinstance(props, dict):
        raise InvalidRequest("item_schema.properties must be an object.", param="data_source_config.item_schema")
    full = {"type": "object", "properties": {"item": schema}, "required": ["item"]}
    if cfg.get("include_sample_schema"):
        full["properties"]["sample"] = SAMPLE_SCHEMA
        full["required"].append("sample")
    return {"type": "custom", "schema": full}


def item_schema(cfg: dict) -> dict:
    return cfg["schema"]["properties"]["item"]


def has_sample(cfg: dict) -> bool:
    return "sample" in cfg["schema"]["properties"]


def parse_items(text: str, param: str) -> list[dict]:
    """[{"item": {...}, "sample": {...} | None}] from JSONL text (400 naming the line)."""
    from openft.data.reader import parse_record  # the data toolkit's line parser and its messages

    out = []
    for n, line in enumerate(text.removeprefix("\ufeff").splitlines(), 1):  # a byte-order mark, as the reader
        if not line.strip():
            continue
        obj, bad = parse_record(line)
        if bad is not None:
            raise InvalidRequest(f"line {n} of the file: {bad}", param=param)
        if not isinstance(obj, dict):
            raise InvalidRequest(f"line {n} of the file is not a JSON object.", param=param)
        out.append({"item": obj["item"], "sample": obj.get("sample")} if isinstance(obj.get("item"), dict)
                   else {"item": obj, "sample": None})
    return out


def _content_text(content, param: str) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, dict) and content.get("type") in ("input_text", "output_text"):
        return content.get("text", "")
    raise InvalidRequest("Only text content is supported: openft serves text models.", param=param)


def check_run_source(ds, eval_cfg: dict, *, read_file: Callable[[str], str],
                     model_exists: Callable[[str], bool]) -> dict:
    """Validate a run's `data_source`; returns {"kind", "items", "model", "template",
    "item_reference", "sampling"}. read_file(file_id) -> text (raises InvalidRequest itself)."""
    if not isinstance(ds, dict):
        raise InvalidRequest("data_source must be an object.", param="data_source", code="invalid_type")
    kind = ds.get("type")
    if kind == "responses":
        raise InvalidRequest("data_source type 'responses' is not supported: openft has no Responses API; use "
                             "'completions' or 'jsonl'.", param="data_source.type", code="unsupported_value")
    if kind not in ("jsonl", "completions"):
        raise InvalidRequest(f"Unknown data_source type {kind!r}; use 'jsonl' or 'completions'.",
                             param="data_source.type", code="invalid_value")
    src = ds.get("source")
    if not isinstance(src, dict):
        raise InvalidRequest("Missing required parameter: 'data_source.source'.", param="data_source.source",
                             code="missing_required_parameter")
    if src.get("type") == "file_content":
        content = src.get("content")
        if not isinstance(content, list):
            raise InvalidRequest("data_source.source.content must be a list of {item, sample}.",
                                 param="data_source.source.content")
        items = []
        for i, row in enumerate(content):
            if not isinstance(row, dict) or not isinstance(row.get("item"), dict):
                raise InvalidRequest("Each content row needs an `item` object.",
                                     param=f"data_source.source.content[{i}].item")
            items.append({"item": row["item"], "sample": row.get("sample")})
    elif src.get("type") == "file_id":
        if not isinstance(src.get("id"), str):
            raise InvalidRequest("Missing required parameter: 'data_source.source.id'.",
                                 param="data_source.source.id", code="missing_required_parameter")
        items = parse_items(read_file(src["id"]), "data_source.source.id")
    else:
        raise InvalidRequest(f"Unsupported source type {src.get('type')!r}; use 'file_content' or 'file_id'.",
                             param="data_source.source.type", code="invalid_value")
    schema = item_schema(eval_cfg)
    if kind == "jsonl":
        return {**generation_spec(ds), "items": items}
    model = ds.get("model")
    if not isinstance(model, str) or not model:
        raise InvalidRequest("Missing required parameter: 'data_source.model'.", param="data_source.model",
                             code="missing_required_parameter")
    if not model_exists(model):
        raise InvalidRequest(f"The model `{model}` does not exist or you do not have access to it.",
                             param="data_source.model", code="model_not_found")
    im = ds.get("input_messages")
    if not isinstance(im, dict):
        raise InvalidRequest("Missing required parameter: 'data_source.input_messages'.",
                             param="data_source.input_messages", code="missing_required_parameter")
    if im.get("type") == "template":
        tpl = im.get("template")
        if not isinstance(tpl, list) or not tpl:
            raise InvalidRequest("input_messages.template must be a non-empty list of messages.",
                                 param="data_source.input_messages.template")
        for i, m in enumerate(tpl):
            where = f"data_source.input_messages.template[{i}]"
            if not isinstance(m, dict) or m.get("role") not in ("system", "developer", "user", "assistant"):
                raise InvalidRequest("Each template message needs a role (system, developer, user, assistant).",
                                     param=f"{where}.role")
            text = _content_text(m.get("content"), f"{where}.content")
            templates.check_refs(text, schema, sample_allowed=False, param=f"{where}.content")
    elif im.get("type") == "item_reference":
        ref = im.get("item_reference")
        if not isinstance(ref, str) or not ref.startswith("item."):
            raise InvalidRequest("item_reference must name an item field, e.g. 'item.messages'.",
                                 param="data_source.input_messages.item_reference")
        templates.check_refs("{{" + ref + "}}", schema, sample_allowed=False,
                             param="data_source.input_messages.item_reference")
    else:
        raise InvalidRequest("input_messages.type must be 'template' or 'item_reference'.",
                             param="data_source.input_messages.type", code="invalid_value")
    sp = ds.get("sampling_params") or {}
    if not isinstance(sp, dict):
        raise InvalidRequest("sampling_params must be an object.", param="data_source.sampling_params")
    allowed = {"max_completion_tokens", "seed", "temperature", "top_p", "response_format", "reasoning_effort"}
    for key in sp:
        if key not in allowed:
            raise InvalidRequest(f"sampling_params.{key} is not supported by openft.",
                                 param=f"data_source.sampling_params.{key}", code="unsupported_value")
    rf = sp.get("response_format")
    if rf is not None and (not isinstance(rf, dict) or rf.get("type") != "text"):
        raise InvalidRequest("Only response_format {'type': 'text'} is supported by openft.",
                             param="data_source.sampling_params.response_format", code="unsupported_value")
    for key, lo, hi, kind in (("temperature", 0, 2, (int, float)), ("top_p", 0, 1, (int, float)),
                              ("max_completion_tokens", 1, 1 << 20, int), ("seed", -(2**63), 2**63 - 1, int)):
        v = sp.get(key)
        if v is not None and (not isinstance(v, kind) or isinstance(v, bool) or not lo <= v <= hi):
            what = "an integer" if kind is int else "a number"
            raise InvalidRequest(f"sampling_params.{key} must be {what} in [{lo}, {hi}].",
                                 param=f"data_source.sampling_params.{key}", code="invalid_value")
    return {**generation_spec(ds), "items": items}


SAMPLING_KEYS = ("max_completion_tokens", "seed", "temperature", "top_p")


def generation_spec(ds: dict) -> dict:
    """What generating a sample needs, from a data source check_run_source accepted: {"kind",
    "model", "template" (messages, developer -> system), "item_reference", "sampling"}."""
    im = ds.get("input_messages") or {}
    tpl = None
    if im.get("type") == "template":
        tpl = [{"role": "system" if m["role"] == "developer" else m["role"],
                "content": _content_text(m.get("content"), "content")} for m in im["template"]]
    sp = ds.get("sampling_params") or {}
    return {"kind": ds["type"], "model": ds.get("model"), "template": tpl, "item_reference": im.get("item_reference"),
            "sampling": {k: sp[k] for k in SAMPLING_KEYS if k in sp}}


def item_problem(item: dict, schema: dict) -> str | None:
    """Why this item cannot be evaluated (a field the schema requires is missing), or None."""
    missing = [k for k in schema.get("required") or [] if k not in item]
    return f"the item lacks required field(s): {', '.join(missing)}" if missing else None


def input_messages(spec: dict, item: dict) -> list[dict]:
    """The chat messages of one item (template rendered, or the item field referenced)."""
    if spec.get("template") is not None:
        return [{"role": m["role"], "content": templates.render(m["content"], item)} for m in spec["template"]]
    ref = spec["item_reference"]
    value = templates._lookup(ref, item, None)
    if isinstance(value, str):
        return [{"role": "user", "content": value}]
    if not isinstance(value, list) or not all(isinstance(m, dict) and "role" in m for m in value):
        raise templates.MissingField(ref)
    return [{"role": m["role"], "content": m.get("content") or ""} for m in value]
