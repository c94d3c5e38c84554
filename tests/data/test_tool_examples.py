"""The function-calling dataset generator (openft.data.tool_examples): deterministic, the test
split's phrasings unseen in training, and every line a valid training line in the default tool
format, its call the trained part."""

from __future__ import annotations

import json

from openft.data.encode import encode_example
from openft.data.tokens import TokenCounter
from openft.data.tool_examples import ASKS, TEST_PHRASINGS, TOOLS, examples, write_jsonl
from openft.data.validate import validate_file


def test_lines_are_deterministic_and_the_test_split_is_held_out():
    train, test = examples(100), examples(40, split="test")
    assert train == examples(100) and examples(100, seed=1) != train
    asks = {r["messages"][0]["content"] for r in train}
    assert not asks & {r["messages"][0]["content"] for r in test}
    names = [t["function"]["name"] for t in TOOLS]
    assert {r["messages"][1]["tool_calls"][0]["function"]["name"] for r in train} == set(names)
    required = {t["function"]["name"]: set(t["function"]["parameters"]["required"]) for t in TOOLS}
    for r in train + test:
        call = r["messages"][1]["tool_calls"][0]["function"]
        assert set(json.loads(call["arguments"])) == required[call["name"]]
        assert r["tools"] == TOOLS  # every line offers all the tools
    assert all(len(ASKS[n]) > TEST_PHRASINGS for n in names)


def test_lines_validate_and_train_the_calls(tiny_tokenizer, tmp_path):
    rows = examples(20)
    assert validate_file(write_jsonl(tmp_path / "t.jsonl", rows), tokenizer=tiny_tokenizer).ok
    assert TokenCounter(tiny_tokenizer).count(rows) == [
        (len(e.input_ids), sum(e.mask)) for e in (encode_example(tiny_tokenizer, r, None) for r in rows)]
    enc = encode_example(tiny_tokenizer, rows[1], None)
    trained = tiny_tokenizer.decode([t for t, m in zip(enc.input_ids, enc.mask) if m])
    call = rows[1]["messages"][1]["tool_calls"][0]["function"]
    assert trained.startswith(f'<tool_call>\n{{"name": "{call["name"]}", "arguments": {call["arguments"]}}}\n'
                              "</tool_call><|im_end|>")
    assert trained.endswith(rows[1]["messages"][3]["content"] + "<|im_end|>")
