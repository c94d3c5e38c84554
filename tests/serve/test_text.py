"""Incremental detokenization and stop strings, with the real SmolLM2 tokenizer."""

from __future__ import annotations

from openft.serve.text import Detokenizer, StopMatcher, TokenBytes

TEXT = "Héllo 😀 wörld — 日本語のテキスト, ok!"


def test_detokenizer_never_emits_half_a_character(tiny_tokenizer):
    ids = tiny_tokenizer(TEXT, add_special_tokens=False)["input_ids"]
    assert len(ids) > len(TEXT.split())  # some characters span several tokens
    d = Detokenizer(tiny_tokenizer, [])
    pieces = [d.push(i) for i in ids] + [d.flush()]
    assert "".join(pieces) == TEXT
    assert not any("\ufffd" in p for p in pieces)


def test_stop_matcher_across_pieces_and_holdback():
    m = StopMatcher(["END", "xyz"])
    out = []
    for piece in ["abc E", "N", "D tail"]:
        text, stopped = m.push(piece)
        out.append(text)
        if stopped:
            break
    assert out == ["abc ", "", ""] and stopped
    m = StopMatcher(["END"])
    assert m.push("look: EN") == ("look: ", False)   # "EN" may start END: held back
    assert m.push("TER") == ("ENTER", False)          # it did not
    assert m.flush() == ""


def test_stop_with_multibyte_characters(tiny_tokenizer):
    ids = tiny_tokenizer(TEXT, add_special_tokens=False)["input_ids"]
    d, m = Detokenizer(tiny_tokenizer, []), StopMatcher(["ö"])
    out = ""
    for i in ids:
        text, stopped = m.push(d.push(i))
        out += text
        if stopped:
            break
    assert stopped and out == TEXT[: TEXT.index("ö")]


def test_token_bytes_are_raw_utf8_pieces(tiny_tokenizer):
    tb = TokenBytes(tiny_tokenizer)
    ids = tiny_tokenizer(TEXT, add_special_tokens=False)["input_ids"]
    assert bytes(b for i in ids for b in tb(i)[1]) == TEXT.encode("utf-8")
