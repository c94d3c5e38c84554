"""Tokenize one training example and compute its loss mask from the model's own chat template.

Chat examples (`{"messages": [...], "tools"?: [...]}`) train on assistant messages whose
`weight` is not 0, including the template's end-of-turn token (so the model learns to stop),
but not the whitespace after it. The mask needs no `{% generation %}` markers: for assistant
message i we render the conversation up to i with the generation prompt (where the answer
starts) and up to and including i (where it ends), and locate both points in the full
rendering by character offsets, which the fast tokenizer maps to tokens. Legacy
`{"prompt", "completion"}` examples train on the completion plus EOS.

Knows nothing about models, batches or files: it sees one example dict and a tokenizer.
"""

from __future__ import annotations

from dataclasses import dataclass

from openft.data.formats import template_messages
from openft.errors import DataError

_GREEN = "\x1b[42;30m"
_DIM = "\x1b[2m"
_RESET = "\x1b[0m"


@dataclass(frozen=True)
class Encoded:
    input_ids: list[int]
    mask: list[int]          # 1: this token is a training target (predicted from the ones before)
    truncated: bool = False  # the example was cut at max_seq_len

    @property
    def n_trained(self) -> int:
        """Tokens that contribute to the loss (a target at position 0 has no context: never)."""
        return sum(self.mask[1:])

    def __len__(self) -> int:
        return len(self.input_ids)


def _render(tokenizer, messages: list[dict], tools, add_generation_prompt: bool) -> str:
    kw = {"tools": tools} if tools else {}
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=add_generation_prompt, **kw)


def _common_prefix(a: str, b: str) -> int:
    n = min(len(a), len(b))
    i = 0
    while i < n and a[i] == b[i]:
        i += 1
    return i


def _content_text(message: dict) -> str:
    c = message.get("content")
    if isinstance(c, list):  # content parts: [{"type": "text", "text": ...}]
        return "".join(p.get("text", "") for p in c if isinstance(p, dict))
    return c or ""


def chat_spans(tokenizer, messages: list[dict], tools=None) -> tuple[str, list[tuple[int, int]]]:
    """(full rendered text, [(start_char, end_char)] of each trained assistant turn)."""
    clean = template_messages([{k: v for k, v in m.items() if k != "weight"} for m in messages])
    full = _render(tokenizer, clean, tools, False)
    spans = []
    for i, m in enumerate(messages):
        if m.get("role") != "assistant" or m.get("weight", 1) == 0:
            continue
        before = _render(tokenizer, clean[:i], tools, True) if i else ""
        after = _render(tokenizer, clean[: i + 1], tools, False)
        start = _common_prefix(before, full)
        if full.startswith(after):
            end = len(after.rstrip())
        else:
            # The template renders the last turn differently from earlier ones (e.g. Qwen3
            # thinking blocks): find the content after `start`, then the turn's closing text.
            content = _content_text(m)
            at = full.find(content, start) if content else start
            if at < 0:
                raise ValueError(f"assistant message {i} not found in the rendered conversation")
            end = at + len(content)
            tail = after[after.rfind(content) + len(content):].rstrip() if content else ""
            if tail and full.startswith(tail, end):
                end += len(tail)
        end = max(end, start)
        if end > start:
            spans.append((start, end))
    return full, spans


def encode_example(tokenizer, example: dict, max_seq_len: int | None) -> Encoded:
    """Token ids and loss mask of one example (chat or prompt/completion), cut at max_seq_len."""
    if not isinstance(example, dict):
        raise DataError("each line must be a JSON object", code="data_type")
    if "messages" in example:
        messages = example["messages"]
        if not isinstance(messages, list) or not messages:
            raise DataError("'messages' must be a non-empty list", field="messages", code="missing_messages_list")
        try:
            full, spans = chat_spans(tokenizer, messages, example.get("tools"))
        except Exception as e:  # jinja errors, bad message shapes the template rejects
            raise DataError(f"the model's chat template rejected this example: {e}", field="messages",
                            code="chat_template_error") from e
        enc = tokenizer(full, add_special_tokens=False, return_offsets_mapping=True)
        ids = list(enc["input_ids"])
        mask = [0] * len(ids)
        for t, (a, b) in enumerate(enc["offset_mapping"]):
            if b > a and any(a < e and b > s for s, e in spans):
                mask[t] = 1
    elif "prompt" in example and "completion" in example:
        prompt, completion = example["prompt"], example["completion"]
        if not isinstance(prompt, str) or not isinstance(completion, str):
            raise DataError("'prompt' and 'completion' must be strings", field="prompt", code="data_type")
        p = list(tokenizer(prompt)["input_ids"]) if prompt else []
        c = list(tokenizer(completion, add_special_tokens=False)["input_ids"])
        if tokenizer.eos_token_id is not None:
            c.append(tokenizer.eos_token_id)
        ids, mask = p + c, [0] * len(p) + [1] * len(c)
    else:
        raise DataError("expected 'messages' (chat) or 'prompt' and 'completion'", field="messages",
                        code="missing_messages_list")
    truncated = max_seq_len is not None and len(ids) > max_seq_len
    if truncated:
        ids, mask = ids[:max_seq_len], mask[:max_seq_len]
    return Encoded(ids, mask, truncated)


def render_mask(tokenizer, encoded: Encoded, color: bool = True) -> str:
    """The example's text with trained tokens highlighted (green; `[[...]]` without color)."""
    runs: list[tuple[int, list[int]]] = []
    for tid, m in zip(encoded.input_ids, encoded.mask):
        if runs and runs[-1][0] == m:
            runs[-1][1].append(tid)
        else:
            runs.append((m, [tid]))
    out = []
    for m, ids in runs:
        text = tokenizer.decode(ids, skip_special_tokens=False)
        if color:
            out.append(f"{_GREEN}{text}{_RESET}" if m else f"{_DIM}{text}{_RESET}")
        else:
            out.append(f"[[{text}]]" if m else text)
    n, k = len(encoded.input_ids), sum(encoded.mask)
    summary = f"\n-- {n} tokens, {k} trained ({100 * k / max(n, 1):.0f}%)" + (", truncated" if encoded.truncated else "")
    return "".join(out) + summary
