"""What Ollama does with a Modelfile's TEMPLATE, SYSTEM and stops, for the tests: the subset of Go's
text/template that chat templates use, and Ollama's way of filling it for a chat request.

Go semantics kept: `{{- ` / ` -}}` trim the whitespace beside an action; `{{ .X }}` is a field of
the current dot (a message inside `range`), `{{ $.X }}` of the root; `if`/`else`/`else if`/`end`,
`range`/`end`, `not`, `and`, `or`, `eq` with string literals; empty strings and lists are false.
Anything else raises, so a TEMPLATE that grows past this subset fails the test instead of being
rendered wrongly. Ollama's side (server/routes.go ChatHandler, template/template.go Execute and
collate): SYSTEM goes in front when the first message is not a system one; `.Messages` holds every
message, system ones included, consecutive messages of one role merged with a blank line;
`.System` is the system messages joined.
"""

from __future__ import annotations

import re
import shlex

_ACTION = re.compile(r"\{\{(-\s)?\s*(.*?)\s*(\s-)?\}\}", re.S)


def parse_modelfile(text: str) -> dict:
    """{'FROM': ..., 'TEMPLATE': ..., 'SYSTEM': ..., 'stop': [...]} from a Modelfile."""
    out: dict = {"stop": []}
    pos = 0
    for m in re.finditer(r'^(\w+)\s+(?:"""(.*?)"""|(.*?))\s*$', text, re.M | re.S):
        if text[pos:m.start()].strip():
            raise ValueError(f"cannot parse Modelfile near {text[pos:m.start()]!r}")
        pos = m.end()
        cmd, value = m[1].upper(), m[2] if m[2] is not None else m[3]
        if cmd == "PARAMETER":
            name, _, arg = value.partition(" ")
            if name == "stop":
                out["stop"].append(shlex.split(arg)[0])
        else:
            out[cmd] = value
    return out


def _tokens(template: str) -> list:
    """Text and ('action', body) items, with Go's trim markers applied to the text beside them."""
    items, pos = [], 0
    for m in _ACTION.finditer(template):
        text = template[pos:m.start()]
        if m[1]:
            text = text.rstrip(" \t\r\n")
        if items and isinstance(items[-1], tuple) and items[-1][2]:
            text = text.lstrip(" \t\r\n")
        items.append(text)
        items.append(("action", m[2], bool(m[3])))
        pos = m.end()
    text = template[pos:]
    if items and items[-1][2]:
        text = text.lstrip(" \t\r\n")
    items.append(text)
    return [(i[0], i[1]) if isinstance(i, tuple) else i for i in items]


def _parse(items: list, i: int, stop: tuple) -> tuple[list, int, str | None]:
    """Nodes until an action in `stop` ('end', 'else'...); returns (nodes, index after, that action)."""
    nodes = []
    while i < len(items):
        it = items[i]
        i += 1
        if isinstance(it, str):
            nodes.append(("text", it))
            continue
        body = it[1]
        word = body.split(" ", 1)[0]
        if word in ("end", "else") and stop:
            return nodes, i, body
        if word in ("if", "range"):
            inner, i, closer = _parse(items, i, ("end", "else"))
            branches, default = [(body[len(word):].strip(), inner)], []
            while closer and closer != "end":
                if closer.startswith("else if ") and word == "if":
                    inner, i, nxt = _parse(items, i, ("end", "else"))
                    branches.append((closer[len("else if "):].strip(), inner))
                    closer = nxt
                elif closer == "else":
                    default, i, closer = _parse(items, i, ("end",))
                else:
                    raise ValueError(f"unsupported action {{{{ {closer} }}}}")
            nodes.append((word, branches, default))
        elif word in ("end", "else"):
            raise ValueError(f"unexpected {{{{ {body} }}}}")
        else:
            nodes.append(("print", body))
    if stop:
        raise ValueError("missing {{ end }}")
    return nodes, i, None


def _args(expr: str) -> list[str]:
    return re.findall(r'"(?:[^"\\]|\\.)*"|\(|\)|[^\s()]+', expr)


def _value(arg: str, dot, root):
    if arg.startswith('"'):
        return bytes(arg[1:-1], "utf-8").decode("unicode_escape")
    if arg.startswith("$."):
        return _field(root, arg[2:])
    if arg.startswith("."):
        return _field(dot, arg[1:])
    raise ValueError(f"unsupported argument {arg!r}")


def _field(obj, name: str):
    if not name:
        return obj
    for part in name.split("."):
        if not isinstance(obj, dict) or part not in obj:
            raise ValueError(f"no field {part!r}")
        obj = obj[part]
    return obj


def _truth(v) -> bool:
    return bool(v)


def _eval(expr: str, dot, root):
    args = _args(expr)
    if args and args[0] in ("not", "and", "or", "eq"):
        vals = [_value(a, dot, root) for a in args[1:]]
        if args[0] == "not" and len(vals) == 1:
            return not _truth(vals[0])
        if args[0] == "eq" and len(vals) >= 2:
            return any(vals[0] == v for v in vals[1:])
        if args[0] == "and" and vals:
            return next((v for v in vals if not _truth(v)), vals[-1])
        if args[0] == "or" and vals:
            return next((v for v in vals if _truth(v)), vals[-1])
    if len(args) == 1:
        return _value(args[0], dot, root)
    raise ValueError(f"unsupported pipeline {expr!r}")


def _run(nodes: list, dot, root, out: list) -> None:
    for node in nodes:
        kind = node[0]
        if kind == "text":
            out.append(node[1])
        elif kind == "print":
            v = _eval(node[1], dot, root)
            if not isinstance(v, str):
                raise ValueError(f"{node[1]!r} is not a string")
            out.append(v)
        elif kind == "if":
            for cond, body in node[1]:
                if _truth(_eval(cond, dot, root)):
                    _run(body, dot, root, out)
                    break
            else:
                _run(node[2], dot, root, out)
        elif kind == "range":
            (expr, body), = node[1]
            seq = _eval(expr, dot, root)
            for item in seq:
                _run(body, item, root, out)
            if not seq:
                _run(node[2], dot, root, out)


def execute(template: str, data: dict) -> str:
    nodes, _, _ = _parse(_tokens(template), 0, ())
    out: list[str] = []
    _run(nodes, data, data, out)
    return "".join(out)


def render_chat(modelfile: dict, messages: list[dict]) -> str:
    """The prompt Ollama builds for a /api/chat request with `messages` and this Modelfile."""
    msgs = [dict(m) for m in messages]
    if modelfile.get("SYSTEM") and (not msgs or msgs[0]["role"] != "system"):
        msgs.insert(0, {"role": "system", "content": modelfile["SYSTEM"]})
    system = "\n\n".join(m["content"] for m in msgs if m["role"] == "system")
    collated: list[dict] = []
    for m in msgs:
        if collated and collated[-1]["Role"] == m["role"] and m["role"] != "tool":
            collated[-1]["Content"] += "\n\n" + m["content"]
        else:
            collated.append({"Role": m["role"], "Content": m["content"]})
    return execute(modelfile["TEMPLATE"], {"System": system, "Messages": collated, "Tools": [], "Response": ""})
