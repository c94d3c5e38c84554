"""Tool calls in a model's format: the grammar that makes an answer a valid call (tool_choice
required or a named function), and the parser that turns generated text back into OpenAI tool
calls, piece by piece as the text streams.

The formats (hermes, llama3, mistral, and DEFAULT for templates without one) are defined in
openft.data.tool_format, which the trainer renders with too: what is parsed here is what a
fine-tuned model was trained to write.

The parser streams each call's arguments as the model writes them: a call opens (id, name) as
soon as its name is known, then the raw JSON text of its arguments follows as it grows. A call
after the first (parallel calls) is held back until it is complete, so an answer cut by
max_tokens ends with the calls the model finished, never with a truncated one. Knows nothing
about HTTP, batching or sampling.
"""

from __future__ import annotations

import json
import secrets
import string
from dataclasses import dataclass

from openft.data.tool_format import HERMES, LLAMA3, MISTRAL, ToolFormat, format_for
from openft.errors import InvalidRequest
from openft.serve.constrain import check_schema, json_rule, lark_grammar
from openft.serve.types import Delta, Finish, ToolCallDelta, ToolChoice

_ALNUM = string.ascii_letters + string.digits


def new_call_id() -> str:
    return "call_" + "".join(secrets.choice(_ALNUM) for _ in range(24))


# ---- requests --------------------------------------------------------------------------------
def check_tools(tools: list | None, choice: ToolChoice) -> None:
    """400 for tools OpenAI would refuse: not function tools, no name, a named choice not among them."""
    if choice.mode in ("required", "function") and not tools:
        raise InvalidRequest(f"tool_choice {choice.mode!r} needs `tools`.", param="tool_choice")
    names = []
    for i, t in enumerate(tools or []):
        if not isinstance(t, dict) or t.get("type") != "function" or not isinstance(t.get("function"), dict):
            raise InvalidRequest("Only tools of type 'function' are supported.", param=f"tools[{i}].type")
        name = t["function"].get("name")
        if not isinstance(name, str) or not name:
            raise InvalidRequest("A function tool needs a name.", param=f"tools[{i}].function.name")
        params = t["function"].get("parameters")
        if params is not None and not isinstance(params, dict):
            raise InvalidRequest("function.parameters must be a JSON schema object.",
                                 param=f"tools[{i}].function.parameters")
        names.append(name)
    if choice.mode == "function" and choice.name not in names:
        raise InvalidRequest(f"tool_choice names the function {choice.name!r}, which is not in `tools`.",
                             param="tool_choice")


def tool_format(chat_template, tools: list | None, choice: ToolChoice) -> ToolFormat | None:
    """The format to parse calls out of (None: the answer is plain text): the template's own, else
    openft's default (data.tool_format.DEFAULT). 400 for bad tools."""
    if tools or choice.mode in ("required", "function"):
        check_tools(tools, choice)
    if not tools or choice.mode == "none":
        return None
    return format_for(chat_template)


def special_token_id(tokenizer, text: str) -> int | None:
    """The id of `text` when the tokenizer has it as one added (special) token."""
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    return int(ids[0]) if len(ids) == 1 else None


def answer_grammar(fmt: ToolFormat | None, tools: list | None, choice: ToolChoice, schema: dict | None,
                   special_token_id) -> tuple[str | None, str]:
    """(the Lark grammar of a whole answer, or None when nothing constrains it; the request field
    its errors name). tool_choice required or a named function: only calls. A response_format
    schema: JSON of it (or calls, under tool_choice auto). Auto alone: free text in which any call
    the model opens is a valid one, when llguidance supports every tool's parameter schema
    (otherwise the answer is left free, as before tools were constrained)."""
    if schema is not None:
        check_schema(schema, "response_format")
    if fmt is None:
        return lark_grammar(json_schema=schema), "response_format"
    forced = choice.mode in ("required", "function")
    used = [(i, t["function"].get("parameters") or {"type": "object"}) for i, t in enumerate(tools)
            if choice.mode != "function" or t["function"]["name"] == choice.name]
    if forced or schema is not None:
        for i, params in used:
            check_schema(params, f"tools[{i}].function.parameters")
        calls = calls_grammar(fmt, tools, choice, special_token_id)
        return lark_grammar(json_schema=None if forced else schema, calls=calls), "tools"
    try:
        for i, params in used:
            check_schema(params, f"tools[{i}].function.parameters")
    except InvalidRequest:
        return None, "tools"
    return auto_grammar(fmt, tools, choice, special_token_id), "tools"


def _call_rules(fmt: ToolFormat, tools: list, choice: ToolChoice) -> list[str]:
    """Lark rules: `call` is one call of an allowed function, `{"name": "f", "<args key>": <args>}`."""
    funcs = [t["function"] for t in tools if choice.mode != "function" or t["function"]["name"] == choice.name]
    rules, alts = [], []
    for k, f in enumerate(funcs):
        schema = f.get("parameters") or {"type": "object"}
        head = json.dumps({"name": f["name"]})[:-1] + f', "{fmt.args_key}": '  # {"name": "f", "arguments":
        rules.append(f"fn{k}: {json.dumps(head)} {json_rule(schema)} \"}}\"")
        alts.append(f"fn{k}")
    return ["call: " + " | ".join(alts), *rules]


def calls_grammar(fmt: ToolFormat, tools: list, choice: ToolChoice, special_token_id) -> str:
    """Lark rules (start rule `calls`) for an answer that is only tool calls in `fmt` (tool_choice
    required or a named function): only the named function when one is named, one call unless
    parallel calls are allowed. `special_token_id(text)` is the id of `text` when it is one
    special token, else None."""
    many = choice.parallel
    rules = _call_rules(fmt, tools, choice)
    if fmt is HERMES:
        rules.append('block: "<tool_call>\\n" call "\\n</tool_call>"')
        body = 'block ("\\n" block)*' if many else "block"
    elif fmt is MISTRAL:
        body = _opener(fmt, special_token_id) + (' "[" call (", " call)* "]"' if many else ' "[" call "]"')
    else:
        body = 'call ("; " call)*' if many else "call"
    return "\n".join([f"calls: {body}", *rules])


def auto_grammar(fmt: ToolFormat, tools: list, choice: ToolChoice, special_token_id) -> str | None:
    """The whole grammar for tool_choice auto: free text, or text followed by calls, as templates
    render an assistant message (content, then its calls). Once the model writes its format's
    opener, the call must be a valid call of one of the tools (llguidance's lazy trigger, as in its
    StructTag), and after the calls the answer ends. None for llama3, whose calls open with a bare `{`."""
    if fmt is LLAMA3:
        return None
    rules = _call_rules(fmt, tools, choice)
    head = '"<tool_call>"' if fmt is HERMES else _opener(fmt, special_token_id)
    if head.startswith("<["):  # a special token cannot occur inside text: no lazy lexeme needed
        rules.insert(0, f"opener: TEXT {head}")
    else:
        rules.insert(0, f"opener[lazy]: TEXT {head}")
    if fmt is HERMES:
        rules.append('block: "<tool_call>\\n" call "\\n</tool_call>"')
        calls = 'opener "\\n" call "\\n</tool_call>"' + (' ("\\n" block)*' if choice.parallel else "")
    else:
        calls = 'opener "[" call' + (' (", " call)*' if choice.parallel else "") + ' "]"'
    return "\n".join(["%llguidance {}", f"start: TEXT | {calls}", "TEXT: /(.|\\n)*/", *rules]) + "\n"


def _opener(fmt: ToolFormat, special_token_id) -> str:
    tid = special_token_id(fmt.open)
    return f"<[{tid}]>" if tid is not None else json.dumps(fmt.open)


# ---- parsing the output ------------------------------------------------------------------------
@dataclass
class CallPiece:
    call_index: int
    arguments: str
    id: str | None = None
    name: str | None = None


class _ObjectScan:
    """Scans one JSON object char by char: the `name` value and where the arguments value starts
    and ends (offsets into `text`), without waiting for the object to end."""

    def __init__(self, args_keys: tuple[str, ...]):
        self.args_keys = args_keys
        self.text = ""
        self.depth = 0
        self.in_str = self.esc = False
        self.str_start = -1
        self.key: str | None = None        # the depth-1 key whose value comes next
        self.expect_key = True
        self.name: str | None = None
        self.args_start = self.args_end = -1
        self.args_depth_open = False
        self.done = False

    def feed(self, chunk: str) -> str:
        """Consume `chunk`; returns what follows the object's end (when it ended)."""
        for i, ch in enumerate(chunk):
            pos = len(self.text)
            self.text += ch
            if self.in_str:
                if self.esc:
                    self.esc = False
                elif ch == "\\":
                    self.esc = True
                elif ch == '"':
                    self.in_str = False
                    self._string_end(pos)
                continue
            if ch == '"':
                self.in_str, self.str_start = True, pos
                if self.depth == 1 and not self.expect_key and self.key in self.args_keys and self.args_start < 0:
                    self.args_start = pos
            elif ch in "{[":
                if self.depth == 1 and not self.expect_key and self.key in self.args_keys and self.args_start < 0:
                    self.args_start = pos
                self.depth += 1
            elif ch in "}]":
                self.depth -= 1
                if self.depth == 1 and self.args_start >= 0 and self.args_end < 0:
                    self.args_end = pos + 1
                if self.depth == 0:
                    self._value_end(pos)
                    self.done = True
                    return chunk[i + 1:]
            elif ch == ":" and self.depth == 1:
                self.expect_key = False
            elif ch == "," and self.depth == 1:
                self._value_end(pos)
                self.expect_key, self.key = True, None
            elif self.depth == 1 and not self.expect_key and not ch.isspace() and self.key in self.args_keys \
                    and self.args_start < 0:
                self.args_start = pos  # a number, true, false or null
        return ""

    def _string_end(self, pos: int) -> None:
        if self.depth != 1:
            return
        s = self.text[self.str_start: pos + 1]
        try:
            value = json.loads(s)
        except ValueError:
            value = None
        if self.expect_key:
            self.key = value
        elif self.key == "name" and isinstance(value, str):
            self.name = value
        elif self.key in self.args_keys and self.args_start == self.str_start:
            self.args_end = pos + 1

    def _value_end(self, pos: int) -> None:
        if self.args_start >= 0 and self.args_end < 0:
            self.args_end = pos

    def arguments_so_far(self) -> tuple[str, bool]:
        """(argument text known so far, complete?). A string value (arguments sent JSON-encoded)
        comes only once complete, decoded."""
        if self.args_start < 0:
            return ("{}" if self.done else ""), self.done
        if self.text[self.args_start] == '"':
            if self.args_end < 0:
                return "", False
            try:
                return str(json.loads(self.text[self.args_start:self.args_end])), True
            except ValueError:
                return "", True
        end = self.args_end if self.args_end >= 0 else len(self.text)
        return self.text[self.args_start:end].rstrip(), self.args_end >= 0


class ToolCallParser:
    """Feed generated text; get back (content text, [CallPiece]). Content comes before the first
    call; text after the calls start that is not a call (separators, closing tags) is dropped."""

    def __init__(self, fmt: ToolFormat, parallel: bool = True):
        self.fmt, self.parallel = fmt, parallel
        self.keys = (fmt.args_key, "arguments", "parameters")
        self.in_calls = False
        self.held = ""            # content held back: it may be the start of the opener
        self.seen_content = False
        self.scan: _ObjectScan | None = None
        self.calls = 0            # calls opened
        self.sent = 0             # argument characters sent of the current call
        self.open_call = False

    def push(self, text: str) -> tuple[str, list[CallPiece]]:
        content, pieces = "", []
        if not self.in_calls:
            content, text = self._content(text)
        if self.in_calls:
            self._calls(text, pieces)
        return content, pieces

    def finish(self) -> tuple[str, list[CallPiece]]:
        pieces: list[CallPiece] = []
        if not self.in_calls:
            out, self.held = self.held, ""
            return out, pieces
        if self.scan is not None:
            self._emit(pieces)
        return "", pieces

    def cut_call(self) -> bool:
        """Is a call that was sent (the first) unfinished? (max_tokens cut it)"""
        return self.open_call and self.scan is not None and not self.scan.done

    def _content(self, text: str) -> tuple[str, str]:
        buf = self.held + text
        self.held = ""
        fmt = self.fmt
        cut = buf.find(fmt.open)
        if cut >= 0:
            self.in_calls = True
            return buf[:cut], buf[cut + len(fmt.open):]
        if fmt is LLAMA3 and not self.seen_content and buf.lstrip().startswith("{"):  # a bare {"name": ...}
            stripped = buf.lstrip()
            compact = "".join(stripped[:40].split())
            if compact.startswith('{"name"'):
                self.in_calls = True
                return "", stripped
            if len(compact) < 7 and '{"name"'.startswith(compact):
                self.held = buf  # not enough text yet to tell
                return "", ""
        keep = 0
        for k in range(min(len(fmt.open) - 1, len(buf)), 0, -1):
            if buf.endswith(fmt.open[:k]):
                keep = k
                break
        out = buf[: len(buf) - keep]
        self.held = buf[len(buf) - keep:]
        if out.strip():
            self.seen_content = True
        return out, ""

    def _calls(self, text: str, pieces: list[CallPiece]) -> None:
        while text:
            if self.scan is None:
                at = text.find("{")
                if at < 0:
                    return  # separators, brackets, closing tags
                text = text[at:]
                self.scan = _ObjectScan(self.keys)
                self.sent, self.open_call = 0, False
            text = self.scan.feed(text)
            self._emit(pieces)
            if self.scan.done:
                self.scan = None

    def _emit(self, pieces: list[CallPiece]) -> None:
        s = self.scan
        if s.name is None:
            return
        if not self.parallel and self.calls >= 1 and not self.open_call:
            return  # parallel_tool_calls false: only the first call counts
        if self.calls >= 1 and not self.open_call and not s.done:
            return  # a later call is held back until complete: max_tokens may cut it (dropped then)
        if not self.open_call:
            self.open_call = True
            self.calls += 1
            pieces.append(CallPiece(self.calls - 1, "", new_call_id(), s.name))
        args, _ = s.arguments_so_far()
        if len(args) > self.sent:
            pieces.append(CallPiece(self.calls - 1, args[self.sent:]))
            self.sent = len(args)


class ToolStream:
    """The engine's items of one request with tool calls parsed out: a Delta keeps the content
    text, ToolCallDelta items carry the calls, and a choice that called a tool and stopped
    finishes with "tool_calls"."""

    def __init__(self, fmt: ToolFormat, parallel: bool):
        self.fmt, self.parallel = fmt, parallel
        self.parsers: dict[int, ToolCallParser] = {}

    def convert(self, item) -> list:
        if isinstance(item, Delta):
            p = self._parser(item.index)
            content, pieces = p.push(item.text)
            return [Delta(item.index, content, item.token_ids, item.logprobs), *self._calls(item.index, pieces)]
        if isinstance(item, Finish):
            p = self._parser(item.index)
            content, pieces = p.finish()
            out = [Delta(item.index, content, [], None)] if content else []
            out += self._calls(item.index, pieces)
            reason = item.finish_reason
            if p.calls and (reason == "stop" or (reason == "length" and not p.cut_call())):
                reason = "tool_calls"  # the calls the model finished (a later call cut short was dropped)
            return [*out, Finish(item.index, reason)]
        return [item]

    def _parser(self, index: int) -> ToolCallParser:
        if index not in self.parsers:
            self.parsers[index] = ToolCallParser(self.fmt, self.parallel)
        return self.parsers[index]

    @staticmethod
    def _calls(index: int, pieces: list[CallPiece]) -> list[ToolCallDelta]:
        return [ToolCallDelta(index, c.call_index, c.arguments, c.id, c.name) for c in pieces]
