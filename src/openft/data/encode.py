"""Tokenize one training example and compute its loss mask from the model's own chat template.

Chat examples (`{"messages": [...], "tools"?: [...]}`) are rendered with openft.data.tool_format
(tools, calls and tool results in the template's own tool format, or openft's default one, as
the server renders and parses them) and train on assistant messages whose
`weight` is not 0, including the template's end-of-turn token (so the model learns to stop),
but not the whitespace after it. The mask needs no `{% generation %}` markers: for assistant
message i we render the conversation up to i with the generation prompt (where the answer
starts) and up to and including i (where it ends), and locate both points in the full
rendering by character offsets, which the fast tokenizer maps to tokens. Legacy
`{"prompt", "completion"}` examples train on the completion plus EOS.

The trainer (openft.train.data, openft.train.dpo) trains on these encodings, the data toolkit
counts trained tokens with them (openft.data.tokens) and `openft data inspect` shows them
(`render_mask`); it lives in `data`, below the trainer, so that the data toolkit never imports the trainer.

Knows nothing about models, batches or files: it sees one example dict and a tokenizer.
"""

from __future__ import annotations

from dataclasses import dataclass

from openft.data.formats import template_messages
from openft.data.tool_format import render
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
    return render(tokenizer, messages, tools, add_generation_prompt=add_generation_prompt)


def _common_prefix(a: str, b: str) -> int:
    """Length of the common prefix of a and b (slice comparisons: C speed, log n of them)."""
    n = min(len(a), len(b))
    if a[:n] == b[:n]:
        return n
    lo, hi = 0, n          # a[:lo] == b[:lo]; a[:hi] != b[:hi]
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if a[lo:mid] == b[lo:mid]:
            lo = mid
        else:
            hi = mid
    return lo


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


BATCH = 256
"""Examples tokenized per call of the fast tokenizer (which spreads a batch over the CPU's cores)."""


def encode_example(tokenizer, example: dict, max_seq_len: int | None) -> Encoded:
    """Token ids and loss mask of one example (chat or prompt/completion), cut at max_seq_len."""
    return encode_examples(tokenizer, [example], max_seq_len)[0]


def encode_examples(tokenizer, examples: list, max_seq_len: int | None, on_error=None) -> list[Encoded]:
    """`encode_example` of each example, the chat renderings tokenized BATCH at a time. A bad
    example raises its DataError; `on_error(index, error)` may raise a better-located one."""
    out: list[Encoded | None] = [None] * len(examples)
    chats: list[tuple[int, str, list[tuple[int, int]]]] = []   # (index, rendered text, trained spans)
    for i, example in enumerate(examples):
        try:
            prepared = _prepare(tokenizer, example)
        except DataError as e:
            if on_error is not None:
                on_error(i, e)
            raise
        if isinstance(prepared, Encoded):
            out[i] = prepared
        else:
            chats.append((i, *prepared))
    for k in range(0, len(chats), BATCH):
        part = chats[k:k + BATCH]
        enc = tokenizer([text for _, text, _ in part], add_special_tokens=False, return_offsets_mapping=True)
        for (i, _, spans), ids, offsets in zip(part, enc["input_ids"], enc["offset_mapping"]):
            out[i] = Encoded(list(ids), _span_mask(offsets, spans))
    return [_cut(e, max_seq_len) for e in out]


def _prepare(tokenizer, example: dict):
    """A chat example's (rendered text, trained character spans), or a prompt/completion
    example's Encoded (uncut)."""
    if not isinstance(example, dict):
        raise DataError("each line must be a JSON object", code="data_type")
    if "messages" in example:
        messages = example["messages"]
        if not isinstance(messages, list) or not messages:
            raise DataError("'messages' must be a non-empty list", field="messages", code="missing_messages_list")
        try:
            return chat_spans(tokenizer, messages, example.get("tools"))
        except Exception as e:  # jinja errors, bad message shapes the template rejects
            raise DataError(f"the model's chat template rejected this example: {e}", field="messages",
                            code="chat_template_error") from e
    if "prompt" in example and "completion" in example:
        prompt, completion = example["prompt"], example["completion"]
        if not isinstance(prompt, str) or not isinstance(completion, str):
            raise DataError("'prompt' and 'completion' must be strings", field="prompt", code="data_type")
        p = list(tokenizer(prompt)["input_ids"]) if prompt else []
        c = list(tokenizer(completion, add_special_tokens=False)["input_ids"])
        if tokenizer.eos_token_id is not None:
            c.append(tokenizer.eos_token_id)
        return Encoded(p + c, [0] * len(p) + [1] * len(c))
    raise DataError("expected 'messages' (chat) or 'prompt' and 'completion'", field="messages",
                    code="missing_messages_list")


def _span_mask(offsets, spans: list[tuple[int, int]]) -> list[int]:
    """1 for each token whose characters [a, b) overlap a trained span (sorted here by start)."""
    mask, j, spans = [0] * len(offsets), 0, sorted(spans)
    for t, (a, b) in enumerate(offsets):
        if b <= a:
            continue                     # no characters (special tokens added by the tokenizer)
        if j and a < spans[j - 1][1]:
            j = 0                        # offsets went backwards: search from the first span again
        while j < len(spans) and spans[j][1] <= a:
            j += 1
        if j < len(spans) and spans[j][0] < b:
            mask[t] = 1
    return mask


def _cut(e: Encoded, max_seq_len: int | None) -> Encoded:
    if max_seq_len is None or len(e.input_ids) <= max_seq_len:
        return e
    return Encoded(e.input_ids[:max_seq_len], e.mask[:max_seq_len], True)


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
