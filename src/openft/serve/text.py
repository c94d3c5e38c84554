"""Token ids -> text as they are generated: incremental detokenization and stop strings.

`Detokenizer` turns one new token at a time into the text it adds, holding back bytes of a
character that is not complete yet (a token may end mid-UTF-8). `StopMatcher` scans the text
stream for stop strings across token boundaries and holds back only a tail that could still
become a stop string. `TokenBytes` gives the raw bytes of one token (logprobs' `bytes`).

Knows nothing about models, batching or HTTP.
"""

from __future__ import annotations

from functools import lru_cache


class Detokenizer:
    """vLLM-style offsets: decode a short window and emit what grew, never a partial character."""

    def __init__(self, tokenizer, prompt_ids: list[int], skip_special: bool = True):
        self.tok = tokenizer
        self.skip = skip_special  # False: special tokens come out as text (a tool-call marker)
        self.ids: list[int] = list(prompt_ids[-6:])   # a little context so leading spaces decode right
        self.prefix = 0
        self.read = len(self.ids)

    def push(self, token_id: int) -> str:
        self.ids.append(token_id)
        prefix_text = self.tok.decode(self.ids[self.prefix:self.read], skip_special_tokens=self.skip)
        full = self.tok.decode(self.ids[self.prefix:], skip_special_tokens=self.skip)
        if len(full) > len(prefix_text) and not full.endswith("\ufffd"):
            self.prefix, self.read = self.read, len(self.ids)
            return full[len(prefix_text):]
        return ""

    def flush(self) -> str:
        """What is left at the end (an incomplete character comes out as U+FFFD)."""
        prefix_text = self.tok.decode(self.ids[self.prefix:self.read], skip_special_tokens=self.skip)
        full = self.tok.decode(self.ids[self.prefix:], skip_special_tokens=self.skip)
        self.prefix = self.read = len(self.ids)
        return full[len(prefix_text):] if full.startswith(prefix_text) else ""


class StopMatcher:
    """Feed text pieces; get back (text safe to emit, stopped?). Text after a stop is dropped."""

    def __init__(self, stops: list[str]):
        self.stops = [s for s in stops if s]
        self.held = ""

    def push(self, text: str) -> tuple[str, bool]:
        if not self.stops:
            return text, False
        buf = self.held + text
        cut = min((i for i in (buf.find(s) for s in self.stops) if i >= 0), default=-1)
        if cut >= 0:
            self.held = ""
            return buf[:cut], True
        keep = 0  # longest tail of buf that is a proper prefix of some stop string
        for s in self.stops:
            for k in range(min(len(s) - 1, len(buf)), keep, -1):
                if buf.endswith(s[:k]):
                    keep = k
                    break
        self.held = buf[len(buf) - keep:] if keep else ""
        return buf[: len(buf) - keep], False

    def flush(self) -> str:
        out, self.held = self.held, ""
        return out


class TokenBytes:
    """Raw bytes of single tokens for byte-level BPE tokenizers (GPT-2 style), else UTF-8 of decode."""

    def __init__(self, tokenizer):
        self.tok = tokenizer
        self.byte_of = {c: b for b, c in _bytes_to_unicode().items()}
        self.cache: dict[int, tuple[str, list[int]]] = {}

    def __call__(self, token_id: int) -> tuple[str, list[int]]:
        hit = self.cache.get(token_id)
        if hit is not None:
            return hit
        piece = self.tok.convert_ids_to_tokens(token_id)
        if isinstance(piece, str) and piece and all(c in self.byte_of for c in piece):
            raw = bytes(self.byte_of[c] for c in piece)
        else:
            raw = self.tok.decode([token_id]).encode("utf-8")
        out = (raw.decode("utf-8", errors="replace"), list(raw))
        if len(self.cache) < 200_000:
            self.cache[token_id] = out
        return out


@lru_cache(maxsize=1)
def _bytes_to_unicode() -> dict[int, str]:
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return {b: chr(c) for b, c in zip(bs, cs)}
