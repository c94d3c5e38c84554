"""Token counts per example (total and trained) with a base model's real tokenizer, fast.

Rendering every example through the chat template (Jinja) and tokenizing it is exact but
slow. For the common case, plain text messages, the rendered example is the message
contents held in a fixed frame of special tokens (`<|im_start|>user\\n ... <|im_end|>\\n`),
so: total = frame(signature) + sum(tokens of each content), where the signature is the
sequence of (role, trained) pairs. The frame is measured once per signature by counting a
probe example exactly, and checked once against the first real example with that signature;
if the two disagree (a template that rewrites contents), that signature is always counted
exactly. Repeated system prompts are tokenized once.

Content lengths come from `PretokenCounter` when the tokenizer allows it: a byte-level BPE
never merges across pre-tokens (the regex-split "words"), so a text's token count is the
sum of its words' counts, and words repeat (Zipf): split with the tokenizer's own regex, look
each word up in a dict, tokenize only the words never seen. It is used only for BPE models
without a normalizer whose pre-tokenizer regex is known, checked against the real tokenizer on
the first texts, and texts containing special-token strings always go to the real tokenizer.
Otherwise contents are tokenized in batches with the Rust tokenizer.

"Exactly" means `openft.data.encode.encode_example`, the encoding the trainer trains on (its mask
decides what is trained); without it (`use_trainer=False`), the chat template plus the rule "assistant content and the
end-of-turn token are trained".

Knows nothing about files, formats other than chat/prompt-completion, or the CLI.
"""

from __future__ import annotations

import json
from typing import Any

from openft.data.encode import encode_example
from openft.data.tool_format import render
from openft.errors import DataError

BIG = 1 << 30  # "no truncation" when counting exactly
GPT2_PATTERN = r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""
_WS = " \t\n\x0b\x0c\r"  # what \s means for ASCII text in the Rust (Unicode White_Space) regex
GPT2_ASCII = rf"""'s|'t|'re|'ve|'m|'ll|'d| ?[A-Za-z]+| ?[0-9]+| ?[^{_WS}A-Za-z0-9]+|[{_WS}]+(?![^{_WS}])|[{_WS}]+"""
MAX_CACHED_WORDS = 400_000   # ~40 MB of short strings; the cache is cleared when full
VERIFY_TEXTS = 512           # texts compared with the real tokenizer before trusting the cache


class PretokenCounter:
    """Token counts of texts from cached per-word counts (exact for byte-level BPE)."""

    def __init__(self, backend: Any, pattern: str, specials: list[str]):
        import re

        import regex

        self.backend = backend
        unicode_findall = regex.compile(pattern).findall
        if pattern == GPT2_PATTERN:  # the stdlib `re` splits ASCII text ~2x faster than `regex`
            ascii_findall = re.compile(GPT2_ASCII).findall
            self.findall = lambda t: ascii_findall(t) if t.isascii() else unicode_findall(t)
        else:
            self.findall = unicode_findall
        self.special = regex.compile("|".join(regex.escape(s) for s in specials)).search if specials else None
        self.cache: dict[str, int] = {}
        self.verified = 0

    @classmethod
    def for_backend(cls, backend: Any) -> PretokenCounter | None:
        """A counter when the tokenizer is a byte-level BPE whose split regex is known, else None."""
        try:
            spec = json.loads(backend.to_str())
        except Exception:  # noqa: BLE001 - not a `tokenizers` tokenizer
            return None
        pre, model = spec.get("pre_tokenizer") or {}, spec.get("model") or {}
        if spec.get("normalizer") is not None or model.get("type") != "BPE" or model.get("dropout"):
            return None
        parts = pre.get("pretokenizers", [pre]) if pre.get("type") == "Sequence" else [pre]
        pattern = None
        for p in parts:
            if p.get("type") == "ByteLevel":
                if p.get("add_prefix_space") or (p.get("use_regex", True) and pattern is not None):
                    return None
                if p.get("use_regex", True):
                    pattern = GPT2_PATTERN
            elif p.get("type") == "Split" and pattern is None and "Regex" in (p.get("pattern") or {}) \
                    and p.get("behavior") == "Isolated" and not p.get("invert"):
                pattern = p["pattern"]["Regex"]
            else:
                return None
        if pattern is None:
            return None
        specials = [t["content"] for t in spec.get("added_tokens", []) if t.get("content")]
        try:
            return cls(backend, pattern, specials)
        except Exception:  # noqa: BLE001 - a regex the `regex` module does not accept
            return None

    def lens(self, texts: list[str]) -> list[int] | None:
        """Token counts, or None if this counter disagreed with the tokenizer (then do not use it)."""
        out = [0] * len(texts)
        cache, findall, special = self.cache, self.findall, self.special
        pending: list[tuple[int, list[str]]] = []
        direct: list[int] = []
        for i, text in enumerate(texts):
            if special is not None and special(text):
                direct.append(i)
                continue
            words = findall(text)
            try:
                out[i] = sum(map(cache.__getitem__, words))
            except KeyError:
                pending.append((i, words))
        if pending:
            if len(cache) > MAX_CACHED_WORDS:
                cache.clear()
            missing = list({w for _, ws in pending for w in ws if w not in cache})
            for w, enc in zip(missing, self.backend.encode_batch_fast(missing, add_special_tokens=False)):
                cache[w] = len(enc.ids)
            for i, ws in pending:
                out[i] = sum(map(cache.__getitem__, ws))
        if direct:
            for i, enc in zip(direct, self.backend.encode_batch_fast([texts[i] for i in direct],
                                                                     add_special_tokens=False)):
                out[i] = len(enc.ids)
        if self.verified < VERIFY_TEXTS:
            sample = texts[: VERIFY_TEXTS - self.verified]
            real = [len(e.ids) for e in self.backend.encode_batch_fast(sample, add_special_tokens=False)]
            if real != out[: len(sample)]:
                return None
            self.verified += len(sample)
        return out


class TokenCounter:
    """`count(examples) -> [(total_tokens, trained_tokens) | DataError, ...]` for normalized
    examples (chat `{"messages": ...}` or `{"prompt", "completion"}`), before any truncation.
    A DataError in the list is an example the model's chat template cannot render."""

    def __init__(self, tokenizer: Any, *, use_trainer: bool = True):
        self.tok = tokenizer
        self.backend = getattr(tokenizer, "backend_tokenizer", None)
        self.encode_example = encode_example if use_trainer else None
        self._frames: dict[tuple, tuple[int, int] | None] = {}   # signature -> (total, trained) frame
        self._checked: set[tuple] = set()
        self._system_cache: dict[str, int] = {}
        self.exact_count = 0  # examples counted through the slow exact path (for tests/benchmarks)
        self.words = PretokenCounter.for_backend(self.backend) if self.backend is not None else None

    # -- exact -----------------------------------------------------------------------------
    def exact(self, ex: dict) -> tuple[int, int]:
        self.exact_count += 1
        if self.encode_example is not None:
            enc = self.encode_example(self.tok, ex, BIG)
            return len(enc.input_ids), int(sum(enc.mask))
        if "messages" not in ex:
            p, c = self._lens([ex["prompt"], ex["completion"]])
            return p + c + 1, c + 1
        try:
            text = render(self.tok, ex["messages"], ex.get("tools"))
        except Exception as e:  # jinja errors: the template cannot render this example
            raise DataError(f"the model's chat template rejected this example: {e}", field="messages",
                            code="chat_template_error") from None
        ids = self.tok(text, add_special_tokens=False)["input_ids"]
        trained = [m.get("content") or "" for m in ex["messages"]
                   if m.get("role") == "assistant" and m.get("weight", 1) != 0]
        return len(ids), sum(self._lens(trained)) + len(trained)

    def _safe_exact(self, ex: dict):
        try:
            return self.exact(ex)
        except DataError as e:
            return e

    def _lens(self, texts: list[str]) -> list[int]:
        if not texts:
            return []
        if self.words is not None:
            out = self.words.lens(texts)
            if out is not None:
                return out
            self.words = None  # disagreed with the real tokenizer: never use it again
        if self.backend is not None:
            return [len(e.ids) for e in self.backend.encode_batch_fast(texts, add_special_tokens=False)]
        return [len(ids) for ids in self.tok(texts, add_special_tokens=False)["input_ids"]]

    # -- fast ------------------------------------------------------------------------------
    @staticmethod
    def signature(ex: dict) -> tuple | None:
        """(role, trained) per message, or None when the example needs the exact path."""
        if "messages" not in ex:  # an empty prompt gets no BOS from the trainer: count it exactly
            return ("prompt_completion",) if ex.get("prompt") else None
        if ex.get("tools") or ex.get("functions"):
            return None
        sig = []
        for m in ex["messages"]:
            role = m.get("role")
            if (role not in ("system", "user", "assistant") or not isinstance(m.get("content"), str)
                    or "name" in m or "tool_calls" in m or "function_call" in m):
                return None
            sig.append((role, role == "assistant" and m.get("weight", 1) != 0))
        return tuple(sig)

    def _frame(self, sig: tuple) -> tuple[int, int] | None:
        if sig not in self._frames:
            if sig == ("prompt_completion",):
                probe = {"prompt": "a", "completion": "a"}
                n_msgs, n_trained = 2, 1
            else:
                probe = {"messages": [{"role": r, "content": "a"} | ({} if t or r != "assistant" else {"weight": 0})
                                      for r, t in sig]}
                n_msgs, n_trained = len(sig), sum(t for _, t in sig)
            try:
                total, trained = self.exact(probe)
                self._frames[sig] = (total - n_msgs, trained - n_trained)
            except DataError:  # the template rejects this shape: each example will say why
                self._frames[sig] = None
        return self._frames[sig]

    def count(self, examples: list[dict]) -> list[tuple[int, int]]:
        out: list[tuple[int, int] | None] = [None] * len(examples)
        texts: list[str] = []
        plan: list[tuple[int, int, list[int], list[int]]] = []  # (i, frame idx, text slots, trained slots)
        pending_sys: dict[str, int] = {}
        for i, ex in enumerate(examples):
            sig = self.signature(ex)
            frame = self._frame(sig) if sig is not None else None
            if frame is None:
                out[i] = self._safe_exact(ex)
                continue
            if sig not in self._checked:  # first real example of this shape: verify the frame
                want = self._safe_exact(ex)
                if isinstance(want, DataError):
                    out[i] = want
                    continue
                self._checked.add(sig)
                got = self._fast_one(ex, sig, frame)
                if got != want:
                    self._frames[sig] = None
                out[i] = want
                continue
            slots, trained = [], []
            if sig == ("prompt_completion",):
                contents = [(ex["prompt"], False), (ex["completion"], True)]
            else:
                contents = [(m["content"], t) for m, (_, t) in zip(ex["messages"], sig)]
            for (text, t), (role, _) in zip(contents, sig if sig[0] != "prompt_completion" else [("", 0)] * 2):
                if role == "system":
                    if text in self._system_cache:
                        slots.append(-1 - self._system_cache[text])  # negative: a known count
                        continue
                    if text in pending_sys:
                        slots.append(pending_sys[text])
                        continue
                    pending_sys[text] = len(texts)
                slots.append(len(texts))
                if t:
                    trained.append(len(texts))
                texts.append(text)
            plan.append((i, frame, slots, trained))
        lens = self._lens(texts)
        for text, j in pending_sys.items():
            if len(self._system_cache) < 10_000:
                self._system_cache[text] = lens[j]
        for i, (f_total, f_trained), slots, trained in plan:
            total = f_total + sum(lens[s] if s >= 0 else -1 - s for s in slots)
            out[i] = (total, f_trained + sum(lens[s] for s in trained))
        return out  # type: ignore[return-value]

    def _fast_one(self, ex: dict, sig: tuple, frame: tuple[int, int]) -> tuple[int, int]:
        if sig == ("prompt_completion",):
            p, c = self._lens([ex["prompt"], ex["completion"]])
            return frame[0] + p + c, frame[1] + c
        lens = self._lens([m["content"] for m in ex["messages"]])
        return frame[0] + sum(lens), frame[1] + sum(n for n, (_, t) in zip(lens, sig) if t)
