"""Constrained decoding: grammars that the output must match, enforced token by token.

Built on llguidance (the Rust engine behind Guidance, also used by vLLM and SGLang): a JSON
schema or a Lark grammar (JSON schemas embedded as `%json{...}`) is compiled once per request
against the model's tokenizer, and each sequence gets its own `LLMatcher`. At every decode step
`Guide.mask` computes the allowed-token bitmask of all constrained rows of the batch at once
and sets the logits of forbidden tokens to -inf in place, before sampling, greedy or not.
End-of-sequence tokens are allowed only where the grammar accepts. Unsupported JSON-schema features are found at compile time and refused with a 400 that
names them, as is a schema with no finite instance (`check_finite`), which llguidance would only
find mid-answer.

JSON is generated with Python's `json.dumps` separators (", " and ": ") and no other whitespace:
a model cannot pad the answer with endless blank lines, and tool calls look as templates render
them. numpy is imported when a model needs it (the API imports this module).
Knows nothing about HTTP, batching or tool formats (openft.serve.tools builds those rules).
"""

from __future__ import annotations

import json
import logging
import re
import threading
from typing import TYPE_CHECKING

from openft.errors import InvalidRequest, ServerError

if TYPE_CHECKING:   # the API imports this module; torch only where a mask is applied
    import torch

log = logging.getLogger(__name__)

JSON_OPTIONS = {"whitespace_flexible": False, "item_separator": ", ", "key_separator": ": "}


def json_rule(schema: dict) -> str:
    """A Lark expression matching JSON values of `schema` (compact json.dumps layout)."""
    return "%json " + json.dumps({**schema, "x-guidance": JSON_OPTIONS})


def lark_grammar(*, json_schema: dict | None = None, calls: str | None = None) -> str | None:
    """The whole grammar of an answer: a tool-call section (Lark rules whose start rule is `calls`,
    from openft.serve.tools), JSON of a schema, either of them (the model chooses), or None."""
    if json_schema is None and calls is None:
        return None
    alts, rules = [], []
    if calls is not None:
        alts.append("calls")
        rules.append(calls)
    if json_schema is not None:
        alts.append("answer")
        rules.append("answer: " + json_rule(json_schema))
    return "\n".join([f"start: {' | '.join(alts)}", *rules]) + "\n"


def check_schema(schema, param: str) -> None:
    """400 unless `schema` is a JSON schema llguidance implements (names the unsupported keywords)."""
    from llguidance import LLMatcher

    if not isinstance(schema, dict):
        raise InvalidRequest(f"{param}: a JSON schema must be an object.", param=param)
    is_error, messages = LLMatcher.validate_grammar_with_warnings(lark_grammar(json_schema=schema))
    if is_error:
        raise InvalidRequest(f"{param}: this JSON schema is not supported for constrained decoding: "
                             f"{_why(messages)}.", param=param)
    check_finite(schema, param)


MAX_SCHEMA_VISITS = 10_000  # subschemas looked at by `check_finite` before it gives up (and lets llguidance judge)


def check_finite(schema, param: str) -> None:
    """400 naming `param` when `schema` has no finite instance: a `$ref` cycle every instance must
    follow (a required property, or the items of a non-empty array, that refer back with no
    alternative), e.g. `{"properties": {"a": {"$ref": "#"}}, "required": ["a"]}`. llguidance
    compiles such a schema and only fails mid-answer, in the parser's internal state."""
    visits = [0]
    if isinstance(schema, dict) and not _finite(schema, schema, frozenset(), visits):
        raise InvalidRequest(f"{param}: this JSON schema has no finite instance (a $ref cycle through required "
                             "properties or non-empty arrays, with no alternative that ends it), so no answer "
                             "could ever complete.", param=param)


def _resolve(root: dict, ref: str):
    """A local `$ref` (`#`, `#/$defs/x`, `#/definitions/x`, any JSON pointer), None when not local."""
    if not ref.startswith("#"):
        return None
    node = root
    for part in filter(None, ref[1:].split("/")):
        part = part.replace("~1", "/").replace("~0", "~")
        if isinstance(node, dict) and part in node:
            node = node[part]
        elif isinstance(node, list) and part.isdigit() and int(part) < len(node):
            node = node[int(part)]
        else:
            return None
    return node


def _finite(node, root: dict, seen: frozenset, visits: list[int]) -> bool:
    """Whether `node` has a finite instance, taking a `$ref` already on this path (in `seen`) as none."""
    visits[0] += 1
    if visits[0] > MAX_SCHEMA_VISITS or not isinstance(node, dict):
        return node is not False
    ref = node.get("$ref")
    if isinstance(ref, str):
        target = _resolve(root, ref)
        if target is not None and (ref in seen or not _finite(target, root, seen | {ref}, visits)):
            return False
    sub = lambda n: _finite(n, root, seen, visits)  # noqa: E731
    for key, need in (("anyOf", any), ("oneOf", any), ("allOf", all)):
        if isinstance(node.get(key), list) and node[key] and not need(sub(n) for n in node[key]):
            return False
    if "const" in node or "enum" in node:
        return True
    types = node.get("type")
    types = types if isinstance(types, list) else [types] if isinstance(types, str) else []
    if any(t in ("string", "number", "integer", "boolean", "null") for t in types):
        return True
    props = node.get("properties") if isinstance(node.get("properties"), dict) else {}
    required = node.get("required") if isinstance(node.get("required"), list) else []
    if not all(sub(props[k]) for k in required if isinstance(k, str) and k in props):
        return False
    min_items = node.get("minItems", 0)
    if isinstance(min_items, int) and min_items > 0:
        prefix = node.get("prefixItems") if isinstance(node.get("prefixItems"), list) else []
        rest = [node["items"]] if "items" in node and len(prefix) < min_items else []
        if not all(sub(n) for n in prefix[:min_items] + rest):
            return False
    return True


def _why(messages: list[str]) -> str:
    """llguidance's reason without the grammar listing it appends (e.g. `Unimplemented keys: ["not"]`)."""
    text = "; ".join(messages)
    m = re.search(r"failed to compile JSON schema: ([^\n]*)", text)
    return m.group(1).strip() if m else text.split("\n")[0].strip()


def grammar_tokenizer(hf_tokenizer, n_vocab: int, eos: list[int]):
    """llguidance's view of a fast Hugging Face tokenizer (its `llguidance.hf.from_tokenizer`, plus
    one fix). llguidance takes every added token for a special one, so grammar text can never use
    an added token that is not special, such as Qwen's `<tool_call>`: the mask allows it and
    consuming it then fails. Those tokens become ordinary vocabulary entries here."""
    import copy

    import llguidance

    from openft.serve.text import _bytes_to_unicode

    backend = copy.copy(hf_tokenizer.backend_tokenizer)
    backend.no_padding()
    backend.no_truncation()
    spec = json.loads(backend.to_str())
    plain = [a for a in spec.get("added_tokens") or [] if not a.get("special")]
    vocab = (spec.get("model") or {}).get("vocab")
    if plain and isinstance(vocab, dict):
        if "ByteLevel" in json.dumps(spec.get("decoder")):  # GPT-2 style: bytes as printable characters
            to_piece = _bytes_to_unicode()
            piece = lambda text: "".join(to_piece[b] for b in text.encode())  # noqa: E731
        else:  # SentencePiece style
            piece = lambda text: text.replace(" ", "\u2581")  # noqa: E731
        spec["added_tokens"] = [a for a in spec["added_tokens"] if a.get("special")]
        for a in plain:
            vocab[piece(a["content"])] = a["id"]
    return llguidance.LLTokenizer(json.dumps(spec), n_vocab=n_vocab, eos_token=eos)


class Guide:
    """One model's side of constrained decoding: its tokenizer as llguidance sees it (built once,
    about a second) and the grammar compiler."""

    def __init__(self, hf_tokenizer, vocab_size: int, eos_ids: set[int]):
        vocab_size = max(vocab_size, len(hf_tokenizer))  # ids past the logits' width are cut off in `mask`
        self.vocab_size = vocab_size
        self.tokenizer = grammar_tokenizer(hf_tokenizer, vocab_size, sorted(eos_ids))
        self.words = (vocab_size + 31) // 32   # int32 words of one row's bitmask
        self._grammars: dict[str, str] = {}    # lark text -> compiled grammar (recent requests)
        self._lock = threading.Lock()

    def compile(self, lark: str, param: str) -> str:
        """Check `lark` against this tokenizer; 400 naming `param` when llguidance refuses it."""
        from llguidance import LLMatcher

        with self._lock:
            hit = self._grammars.get(lark)
        if hit is not None:
            return hit
        grammar = LLMatcher.grammar_from_lark(lark)
        is_error, messages = LLMatcher.validate_grammar_with_warnings(grammar, self.tokenizer)
        if is_error:
            raise InvalidRequest(f"{param}: cannot be enforced by constrained decoding: {_why(messages)}.",
                                 param=param)
        with self._lock:
            if len(self._grammars) > 64:
                self._grammars.clear()
            self._grammars[lark] = grammar
        return grammar

    def matcher(self, grammar: str) -> Matcher:
        from llguidance import LLMatcher

        m = LLMatcher(self.tokenizer, grammar, log_level=0)
        if m.is_error():
            log.warning("llguidance refused a grammar: %s", m.get_error())
            raise InvalidRequest(f"The output constraint cannot be enforced: {_why([m.get_error()])[:300]}",
                                 param="response_format")
        return Matcher(m)

    def mask(self, logits: torch.Tensor, rows: list[tuple[Matcher, int]]) -> None:
        """Set the logits of the tokens each row's grammar forbids to -inf, in place.
        logits: [batch, vocab] float32 on CPU; rows: (matcher, batch row) of the constrained rows.

        One call per step for the batch. Each matcher writes its row of the bitmask in Rust
        (about 0.1 ms; llguidance's parallel executor was measured slower on the 2-core box, where
        handing work to another thread waits on the scheduler); the bits are then unpacked and
        applied with one vectorised fill per row, never a Python loop over the vocabulary."""
        import numpy as np

        bits = np.empty((len(rows), self.words), dtype=np.int32)
        for k, (m, _) in enumerate(rows):
            m.m.unsafe_compute_mask_ptr(bits[k].ctypes.data, self.words * 4)
        # bit j of word w allows token 32 w + j (little-endian bit order within each int32)
        allowed = np.unpackbits(bits.view(np.uint8), axis=1, bitorder="little")[:, : logits.shape[1]]
        # numpy, single-threaded, writing through a view of the logits: torch's masked_fill_ splits
        # each row over its intra-op threads and was measured 30x slower on the loaded 2-core box.
        view = logits.numpy()
        for k, (_, row) in enumerate(rows):
            np.putmask(view[row], allowed[k] == 0, -np.inf)


class Matcher:
    """One sequence's position in its grammar."""

    def __init__(self, m):
        self.m = m

    def consume(self, token: int) -> None:
        if not self.m.consume_token(token):  # the parser's state and the grammar go to the log, not the client
            log.error("constrained decoding lost its place in the grammar: %s", self.m.get_error())
            raise ServerError("Constrained decoding lost its place in the grammar (the server log has the details).")

    def accepting(self) -> bool:
        return self.m.is_accepting()
