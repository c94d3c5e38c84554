"""Tool-call formats: how a model's prompt writes the tools it may call, its own calls and the
tools' results, decided once for the trainer and the server.

A chat template that speaks tools keeps its own format, recognised from its text (`detect`):
- hermes (Qwen2/2.5/3, Hermes, SmolLM3): `<tool_call>\\n{"name": ..., "arguments": {...}}\\n</tool_call>`,
  one block per call.
- llama3 (Llama 3.1-3.3 JSON tool calling): `{"name": ..., "parameters": {...}}`, optionally after
  `<|python_tag|>`, calls separated by `; `.
- mistral: `[TOOL_CALLS][{"name": ..., "arguments": {...}}, ...]`.

Every other template (SmolLM2, the bundled default model; openft-tiny, the test model) gets
openft's DEFAULT format, the Hermes/Qwen2.5 convention written into the messages before the
template sees them (`default_messages`):
- the tools go into the system message as Qwen2.5's template writes them ("# Tools ... <tools>
  one JSON object per tool </tools> ... within <tool_call></tool_call> XML tags"), after the
  system message's own text when there is one;
- an assistant message's calls become its text, after its content: one
  `<tool_call>\\n{"name": ..., "arguments": {...}}\\n</tool_call>` block per call, joined by `\\n`;
- the results of consecutive `tool` messages become one user message, each result wrapped in
  `<tool_response>\\n...\\n</tool_response>` and joined by `\\n`.
The server parses the same blocks back out of the model's output (openft.serve.tools, with
HERMES), so a model is served exactly the text it was trained on.

`render(tokenizer, messages, tools, add_generation_prompt=)` is the one way both sides render a
chat: the trainer (openft.data.encode, openft.data.tokens) and serving (openft.serve.checks).
Knows nothing about tokenization beyond `apply_chat_template`, about HTTP or about grammars.
"""

from __future__ import annotations

import json
from dataclasses import dataclass


@dataclass(frozen=True)
class ToolFormat:
    name: str            # hermes | llama3 | mistral
    open: str            # text that starts the calls ("" for llama3: a bare JSON object)
    close: str           # text after each call (hermes)
    args_key: str        # key of the arguments object in the call
    special: bool        # the marker may be a special token: decode with special tokens kept


HERMES = ToolFormat("hermes", "<tool_call>", "</tool_call>", "arguments", False)
LLAMA3 = ToolFormat("llama3", "<|python_tag|>", "", "parameters", True)
MISTRAL = ToolFormat("mistral", "[TOOL_CALLS]", "", "arguments", True)
DEFAULT = HERMES
"""openft's format for templates without their own: the Hermes/Qwen convention."""

TOOLS_HEADER = ("# Tools\n\nYou may call one or more functions to assist with the user query.\n\n"
                "You are provided with function signatures within <tools></tools> XML tags:\n<tools>")
TOOLS_FOOTER = ("\n</tools>\n\nFor each function call, return a json object with function name and arguments "
                "within <tool_call></tool_call> XML tags:\n<tool_call>\n"
                '{"name": <function-name>, "arguments": <args-json-object>}\n</tool_call>')


def detect(chat_template) -> ToolFormat | None:
    """The template's own tool format (a string, or a dict of named templates); None: it has none."""
    text = "\n".join(chat_template.values()) if isinstance(chat_template, dict) else (chat_template or "")
    if "<tool_call>" in text:
        return HERMES
    if "[TOOL_CALLS]" in text:
        return MISTRAL
    if "<|python_tag|>" in text or ("ipython" in text and "parameters" in text):
        return LLAMA3
    return None


def format_for(chat_template) -> ToolFormat:
    """The format a model's calls are written in: its template's own, else DEFAULT."""
    return detect(chat_template) or DEFAULT


def _json(value) -> str:
    """JSON as templates' `tojson` writes it (", " and ": ", non-ASCII kept)."""
    return json.dumps(value, ensure_ascii=False)


def tools_text(tools: list) -> str:
    """The tools block of the system message: one JSON object per tool, as given."""
    return TOOLS_HEADER + "".join("\n" + _json(t) for t in tools) + TOOLS_FOOTER


def call_text(name: str, arguments) -> str:
    """One call as the model writes it. `arguments`: an object, or OpenAI's JSON string of one."""
    if isinstance(arguments, str):
        try:
            arguments = json.loads(arguments)
        except ValueError:
            pass  # not JSON: written as the string it is
    return "<tool_call>\n" + _json({"name": name, "arguments": {} if arguments is None else arguments}) \
        + "\n</tool_call>"


def _text(content) -> str:
    """A message content as text (content parts joined)."""
    if isinstance(content, list):
        return "".join(p.get("text", "") for p in content if isinstance(p, dict))
    return content or ""


def response_text(content) -> str:
    """One tool result as the model reads it."""
    return "<tool_response>\n" + _text(content) + "\n</tool_response>"


def assistant_text(message: dict) -> str:
    """An assistant message's text: its content, then one block per call, joined by newlines."""
    blocks = []
    for c in message.get("tool_calls") or []:
        f = c.get("function") or c   # OpenAI's {"function": {...}} or a bare {"name", "arguments"}
        blocks.append(call_text(f.get("name", ""), f.get("arguments")))
    content = _text(message.get("content"))
    return "\n".join(([content] if content else []) + blocks)


def default_messages(messages: list[dict], tools: list | None) -> list[dict]:
    """`messages` with the tools, calls and results written as DEFAULT's text (module docstring),
    for a template that knows only roles and content. Without tools, calls or tool messages the
    list is returned as it is (a plain chat renders as before)."""
    if not tools and not any(m.get("tool_calls") or m.get("role") == "tool" for m in messages):
        return messages
    out: list[dict] = []
    after_tool = False   # the last message written holds tool results: the next result joins it
    for m in messages:
        role = m.get("role")
        if role == "tool":
            text = response_text(m.get("content"))
            if after_tool:
                out[-1] = {**out[-1], "content": out[-1]["content"] + "\n" + text}
            else:
                out.append({"role": "user", "content": text})
        elif role == "assistant" and m.get("tool_calls"):
            out.append({**{k: v for k, v in m.items() if k != "tool_calls"}, "content": assistant_text(m)})
        else:
            out.append(m)
        after_tool = role == "tool"
    if tools:
        if out and out[0].get("role") == "system":
            own = _text(out[0].get("content"))
            out[0] = {**out[0], "content": (own + "\n\n" if own else "") + tools_text(tools)}
        else:
            out.insert(0, {"role": "system", "content": tools_text(tools)})
    return out


def render(tokenizer, messages: list[dict], tools: list | None = None, *, add_generation_prompt: bool = False) -> str:
    """The chat's text through the model's template: tools passed to a template that has a tool
    format, written into the messages in DEFAULT otherwise."""
    if detect(tokenizer.chat_template) is None:
        messages, tools = default_messages(messages, tools), None
    kw = {"tools": tools} if tools else {}
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=add_generation_prompt, **kw)
