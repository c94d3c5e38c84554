"""The dataset formats openft understands, their checks, and their normalization to chat.

One record (a parsed JSON object) at a time: `detect(record)` names its format,
`check(record, fmt)` lists every problem in it as `(code, field, message, severity)` tuples,
`to_chat(record, fmt)` turns a valid record into a chat example `{"messages": [...]}`.

Formats:
- chat: `{"messages": [...], "tools"?, "parallel_tool_calls"?}` (OpenAI fine-tuning chat)
- prompt_completion: `{"prompt": str, "completion": str}` (legacy)
- preference: `{"input": {"messages": [...]}, "preferred_output": [...],
  "non_preferred_output": [...]}` (DPO; `*_completion` spellings accepted)
- evals: `{"input": [messages], "ideal": str | [str]}` (OpenAI evals)

The check names are the OpenAI cookbook's (`data_type`, `missing_messages_list`,
`message_missing_key`, `message_unrecognized_key`, `unrecognized_role`, `missing_content`,
`example_missing_assistant_message`) minus its false alarms: tool calls, `weight`, the
`tool` role and `tool_call_id` are valid here.

Knows nothing about files, line numbers, tokenizers or the CLI.
"""

from __future__ import annotations

import json
from typing import Any

CHAT, PROMPT_COMPLETION, PREFERENCE, EVALS = "chat", "prompt_completion", "preference", "evals"
FORMATS = (CHAT, PROMPT_COMPLETION, PREFERENCE, EVALS)

ROLES = ("system", "user", "assistant", "tool", "function")
MESSAGE_KEYS = ("role", "content", "name", "weight", "tool_calls", "tool_call_id", "function_call", "refusal")
CHAT_KEYS = ("messages", "tools", "parallel_tool_calls", "functions")
PREFERRED_KEYS = ("preferred_output", "preferred_completion")
NON_PREFERRED_KEYS = ("non_preferred_output", "non_preferred_completion")

ERROR, WARNING = "error", "warning"
Issue = tuple[str, str | None, str, str]  # (code, field, message, severity)


def _type(v: Any) -> str:
    return {dict: "object", list: "array", str: "string", bool: "boolean", int: "integer",
            float: "number", type(None): "null"}.get(type(v), type(v).__name__)


def detect(record: Any) -> str | None:
    """The format of one record, from its keys; None when it matches none."""
    if not isinstance(record, dict):
        return None
    if "messages" in record:
        return CHAT
    if "input" in record and any(k in record for k in PREFERRED_KEYS + NON_PREFERRED_KEYS):
        return PREFERENCE
    if "input" in record and "ideal" in record:
        return EVALS
    if "prompt" in record or "completion" in record:
        return PROMPT_COMPLETION
    return None


def content_text(content: Any) -> str | None:
    """A message content as text: strings as they are, arrays of text parts joined; else None."""
    if isinstance(content, str):
        return content
    if isinstance(content, list) and all(isinstance(p, dict) and p.get("type") == "text"
                                         and isinstance(p.get("text"), str) for p in content):
        return "".join(p["text"] for p in content)
    return None


def check_messages(messages: Any, field: str, *, need_assistant: bool = True) -> list[Issue]:
    """Every problem in a list of chat messages (the cookbook's checks, corrected)."""
    if not isinstance(messages, list) or not messages:
        what = "is empty" if isinstance(messages, list) else f"must be a list of messages, got {_type(messages)}"
        return [("missing_messages_list", field, f"{field} {what}", ERROR)]
    out: list[Issue] = []
    for i, m in enumerate(messages):
        f = f"{field}[{i}]"
        if not isinstance(m, dict):
            out.append(("data_type", f, f"a message must be an object, got {_type(m)}", ERROR))
            continue
        role = m.get("role")
        if "role" not in m:
            out.append(("message_missing_key", f"{f}.role", "message has no 'role'", ERROR))
        elif role not in ROLES:
            out.append(("unrecognized_role", f"{f}.role",
                        f"role {role!r} is not one of {', '.join(ROLES)}", ERROR))
        extra = [k for k in m if k not in MESSAGE_KEYS]
        if extra:
            out.append(("message_unrecognized_key", f"{f}.{extra[0]}",
                        f"unrecognized key(s) {', '.join(map(repr, extra))}; allowed: {', '.join(MESSAGE_KEYS)}",
                        ERROR))
        calls = m.get("tool_calls") or m.get("function_call")
        if "content" not in m and not calls:
            out.append(("message_missing_key", f"{f}.content", "message has no 'content'", ERROR))
        elif "content" in m:
            c = m["content"]
            text = content_text(c)
            if c is not None and text is None:
                out.append(("missing_content", f"{f}.content",
                            f"content must be a string (or a list of text parts), got {_type(c)}", ERROR))
            elif not text and not calls:
                out.append(("missing_content", f"{f}.content", "content is empty", ERROR))
        if "weight" in m:
            w = m["weight"]
            if role != "assistant":
                out.append(("invalid_weight", f"{f}.weight", "'weight' is only allowed on assistant messages", ERROR))
            elif isinstance(w, bool) or w not in (0, 1):
                out.append(("invalid_weight", f"{f}.weight", f"weight must be 0 or 1, got {w!r}", ERROR))
        if "name" in m and not isinstance(m["name"], str):
            out.append(("data_type", f"{f}.name", f"name must be a string, got {_type(m['name'])}", ERROR))
        if "tool_calls" in m:
            out.extend(_check_tool_calls(m["tool_calls"], f"{f}.tool_calls", role))
        if role == "tool" and not isinstance(m.get("tool_call_id", ""), str):
            out.append(("data_type", f"{f}.tool_call_id", "tool_call_id must be a string", ERROR))
    if need_assistant and not any(isinstance(m, dict) and m.get("role") == "assistant" for m in messages):
        out.append(("example_missing_assistant_message", field, "no assistant message: nothing to train on", ERROR))
    elif need_assistant and not any(isinstance(m, dict) and m.get("role") == "assistant" and m.get("weight", 1) != 0
                                    for m in messages):
        out.append(("no_trained_messages", field, "every assistant message has weight 0: nothing is trained", WARNING))
    return out


def _check_tool_calls(calls: Any, field: str, role: Any) -> list[Issue]:
    if role != "assistant":
        return [("invalid_tool_calls", field, "only assistant messages may have tool_calls", ERROR)]
    if not isinstance(calls, list):
        return [("invalid_tool_calls", field, f"tool_calls must be a list, got {_type(calls)}", ERROR)]
    out = []
    for j, c in enumerate(calls):
        fn = c.get("function") if isinstance(c, dict) else None
        if not isinstance(fn, dict) or not isinstance(fn.get("name"), str):
            out.append(("invalid_tool_calls", f"{field}[{j}].function.name",
                        "a tool call needs function.name (string)", ERROR))
        elif not isinstance(fn.get("arguments", ""), str):
            out.append(("invalid_tool_calls", f"{field}[{j}].function.arguments",
                        "function.arguments must be a JSON string", ERROR))
    return out


def check(record: Any, fmt: str) -> list[Issue]:
    """Every problem in one record of format `fmt` (as `detect` named it)."""
    if not isinstance(record, dict):
        return [("data_type", None, f"each line must be a JSON object, got {_type(record)}", ERROR)]
    if fmt == CHAT:
        out = check_messages(record.get("messages"), "messages")
        if "tools" in record and not isinstance(record["tools"], list):
            out.append(("data_type", "tools", f"tools must be a list, got {_type(record['tools'])}", ERROR))
        if "parallel_tool_calls" in record and not isinstance(record["parallel_tool_calls"], bool):
            out.append(("data_type", "parallel_tool_calls", "parallel_tool_calls must be true or false", ERROR))
        allowed = CHAT_KEYS
    elif fmt == PROMPT_COMPLETION:
        out = []
        for k in ("prompt", "completion"):
            if k not in record:
                out.append(("missing_key", k, f"no {k!r}", ERROR))
            elif not isinstance(record[k], str):
                out.append(("data_type", k, f"{k} must be a string, got {_type(record[k])}", ERROR))
        if isinstance(record.get("completion"), str) and not record["completion"].strip():
            out.append(("missing_content", "completion", "completion is empty", ERROR))
        allowed = ("prompt", "completion")
    elif fmt == PREFERENCE:
        inp = record.get("input")
        if not isinstance(inp, dict):
            out = [("data_type", "input", f"input must be an object with 'messages', got {_type(inp)}", ERROR)]
        else:
            out = check_messages(inp.get("messages"), "input.messages", need_assistant=False)
        for keys in (PREFERRED_KEYS, NON_PREFERRED_KEYS):
            key = next((k for k in keys if k in record), keys[0])
            val = record.get(key)
            if key not in record:
                out.append((f"missing_{keys[0]}", key, f"no {key!r}", ERROR))
            elif not isinstance(val, list) or len(val) != 1:
                out.append(("data_type", key, f"{key} must be a list with one assistant message", ERROR))
            else:
                out.extend(check_messages(val, key))
        outputs = [record.get(next((k for k in keys if k in record), keys[0])) for keys in (PREFERRED_KEYS, NON_PREFERRED_KEYS)]
        if all(isinstance(o, list) and len(o) == 1 and isinstance(o[0], dict) for o in outputs) \
                and _answer(outputs[0][0]) == _answer(outputs[1][0]):
            out.append(("identical_outputs", "non_preferred_output", "preferred_output and non_preferred_output are "
                        "the same answer: the pair teaches nothing", ERROR))
        allowed = ("input",) + PREFERRED_KEYS + NON_PREFERRED_KEYS
    elif fmt == EVALS:
        out = check_messages(record.get("input"), "input", need_assistant=False)
        ideal = record.get("ideal")
        if not (isinstance(ideal, str) or (isinstance(ideal, list) and ideal and isinstance(ideal[0], str))):
            out.append(("data_type", "ideal", f"ideal must be a string or a list of strings, got {_type(ideal)}", ERROR))
        elif not (ideal if isinstance(ideal, str) else ideal[0]).strip():
            out.append(("missing_content", "ideal", "ideal is empty", ERROR))
        allowed = ("input", "ideal")
    else:
        return [("unknown_format", None, "unrecognized record: expected 'messages' (chat), 'prompt'/'completion', "
                 "'input' + 'preferred_output' (preference) or 'input' + 'ideal' (evals); "
                 f"got keys {', '.join(map(repr, list(record)[:8])) or 'none'}", ERROR)]
    extra = [k for k in record if k not in allowed]
    if extra:
        out.append(("example_unrecognized_key", extra[0], f"unrecognized key(s) {', '.join(map(repr, extra))} "
                    "are ignored", WARNING))
    return out


def _answer(m: dict) -> tuple:
    """What a preference output says (its text and tool calls), to compare two outputs."""
    text = content_text(m.get("content"))
    return ((text or "").strip(), repr(m.get("tool_calls")), repr(m.get("function_call")))


def _clean(text: str) -> str:
    # Byte-order marks pasted inside text (U+FEFF) are invisible noise to a tokenizer.
    return text.replace("\ufeff", "") if "\ufeff" in text else text


def _norm_message(m: dict) -> dict:
    out = dict(m)
    if "content" in out and out["content"] is not None:
        out["content"] = _clean(content_text(out["content"]) or "")
    return out


def to_chat(record: dict, fmt: str, *, system: str | None = None) -> dict:
    """A valid record as a chat example; `system` is prepended when the example has none."""
    if fmt == CHAT:
        ex = {k: v for k, v in record.items() if k in CHAT_KEYS}
        ex["messages"] = [_norm_message(m) for m in record["messages"]]
    elif fmt == PROMPT_COMPLETION:
        ex = {"messages": [{"role": "user", "content": _clean(record["prompt"])},
                           {"role": "assistant", "content": _clean(record["completion"])}]}
    elif fmt == EVALS:
        ideal = record["ideal"] if isinstance(record["ideal"], str) else record["ideal"][0]
        ex = {"messages": [_norm_message(m) for m in record["input"]] + [{"role": "assistant", "content": _clean(ideal)}]}
    elif fmt == PREFERENCE:
        preferred = record.get("preferred_output", record.get("preferred_completion"))
        ex = {"messages": [_norm_message(m) for m in record["input"]["messages"]] + [_norm_message(preferred[0])]}
    else:
        raise ValueError(f"unknown format {fmt!r}")
    if system is not None and not any(m.get("role") == "system" for m in ex["messages"]):
        ex["messages"].insert(0, {"role": "system", "content": system})
    return ex


def chat_to_prompt_completion(example: dict) -> dict:
    """A chat example as legacy prompt/completion: the last assistant message is the completion,
    everything before it is the prompt, one `role: content` line per message."""
    msgs = example["messages"]
    last = max(i for i, m in enumerate(msgs) if m.get("role") == "assistant")
    prompt = "\n".join(f"{m['role']}: {content_text(m.get('content')) or ''}" for m in msgs[:last])
    return {"prompt": prompt + "\nassistant:", "completion": " " + (content_text(msgs[last].get("content")) or "")}


def template_messages(messages: list[dict]) -> list[dict]:
    """Messages as chat templates expect them: an assistant's tool-call arguments as an object
    (OpenAI sends a JSON string; Llama, Mistral and Qwen2.5 templates apply `tojson` to it).
    The trainer and the serving engine both render through this, so a model is served the
    text it was trained on."""
    out = []
    for m in messages:
        calls = m.get("tool_calls")
        if calls:
            fixed = []
            for c in calls:
                f = dict(c.get("function") or {})
                if isinstance(f.get("arguments"), str):
                    try:
                        f["arguments"] = json.loads(f["arguments"])
                    except ValueError:
                        pass
                fixed.append({**c, "function": f})
            m = {**m, "tool_calls": fixed}
        out.append(m)
    return out
