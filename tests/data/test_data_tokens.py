"""Token statistics: the fast counts equal the trainer's own tokenization, example by example."""

from __future__ import annotations

import json

from openft.data.encode import encode_example
from openft.data.estimate import Pace, auto_n_epochs, estimate, human_duration
from openft.data.light_tokenizer import LightTokenizer
from openft.data.tokens import PretokenCounter, TokenCounter
from openft.data.validate import distribution, validate_file
from openft.errors import DataError
from tests.support.data import chat, write_jsonl

TEXTS = ["Hello <|im_end|> world", "tabs\tand\n\nnewlines  ", "   ", "", "émoji 🤗 中文 ١٢٣ 12345 ²",
         "don't I'LL we've 'sa", "a\x1cb\x85c\xa0d  \n x", "\ufeffPremise: x", "ends with space ", "\n\nlead"]


def varied_examples():
    exs = [chat(i, answer=a) for i, a in enumerate(["positive", "negative", "A longer answer, with words."])]
    exs.append({"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "draft", "weight": 0},
                             {"role": "user", "content": "again"}, {"role": "assistant", "content": "final"}]})
    exs.append({"messages": [{"role": "user", "content": t or "x"} for t in TEXTS[:1]] +
                [{"role": "assistant", "content": t or "y"} for t in TEXTS]})
    exs.append({"messages": [{"role": "user", "content": "Weather?"},
                             {"role": "assistant", "tool_calls": [{"id": "c", "type": "function", "function":
                                                                   {"name": "w", "arguments": "{}"}}]},
                             {"role": "tool", "tool_call_id": "c", "content": "18C"},
                             {"role": "assistant", "content": "18C."}]})
    exs.append({"prompt": "Translate: chat", "completion": " cat"})
    return exs


def exact(tok, ex):
    try:
        enc = encode_example(tok, ex, None)
    except DataError as e:
        return e.code
    return len(enc.input_ids), sum(enc.mask)


def test_fast_counts_equal_the_trainer(tiny_tokenizer, shared_data, tmp_path):
    from openft.data.convert import convert_file

    examples = varied_examples()
    convert_file(shared_data / "conjnli" / "examples.jsonl", tmp_path / "c.jsonl")
    examples += [json.loads(line) for line in open(tmp_path / "c.jsonl")][:200]
    counter = TokenCounter(tiny_tokenizer)
    got = counter.count(examples) + counter.count(examples)   # second pass: caches warm
    got = [g.code if isinstance(g, DataError) else g for g in got]
    want = [exact(tiny_tokenizer, ex) for ex in examples] * 2
    assert got == want
    # SmolLM2's template knows no tools: the tool-call turn is counted in openft's default format
    assert isinstance(got[5], tuple) and got[5][1] > 0
    assert counter.words is not None  # the word cache stayed in use: it agreed with the tokenizer
    assert counter.exact_count < 30   # probes and checks, not one exact count per example


def test_pretoken_counter_matches_tokenizer_on_odd_text(tiny_tokenizer):
    backend = tiny_tokenizer.backend_tokenizer
    pc = PretokenCounter.for_backend(backend)
    assert pc is not None
    assert pc.lens(TEXTS * 3) == [len(e.ids) for e in backend.encode_batch_fast(TEXTS * 3, add_special_tokens=False)]


def test_light_tokenizer_equals_auto_tokenizer(tiny_model_dir, tiny_tokenizer):
    light = LightTokenizer(tiny_model_dir)
    assert light.eos_token_id == tiny_tokenizer.eos_token_id and len(light) == len(tiny_tokenizer)
    for i, ex in enumerate(varied_examples()):
        assert exact(light, ex) == exact(tiny_tokenizer, ex)
        if "messages" in ex and i != 5:  # 5: the raw template fails on its tool call (openft renders it)
            for gen in (False, True):
                assert light.apply_chat_template(ex["messages"], add_generation_prompt=gen) == \
                    tiny_tokenizer.apply_chat_template(ex["messages"], tokenize=False, add_generation_prompt=gen)


def test_template_errors_are_located(tiny_tokenizer, tmp_path):
    rows = [chat(i) for i in range(12)]
    # SmolLM2's template reads message.content unguarded: a legacy function_call turn without content breaks it
    rows[7] = {"messages": [{"role": "user", "content": "Weather?"},
                            {"role": "assistant", "function_call": {"name": "w", "arguments": "{}"}}]}
    rep = validate_file(write_jsonl(tmp_path / "t.jsonl", rows), tokenizer=tiny_tokenizer)
    assert [(e.code, e.line, e.field) for e in rep.errors] == [("chat_template_error", 8, "messages")]
    assert str(rep.errors[0]).startswith(f"{tmp_path / 't.jsonl'}:8 [messages]: the model's chat template rejected")


def test_validate_statistics_and_estimate(tiny_tokenizer, tmp_path):
    rows = [chat(i, "positive" if i % 3 else "negative") for i in range(30)]
    rows[5]["messages"][1]["content"] = "long " * 300
    rep = validate_file(write_jsonl(tmp_path / "s.jsonl", rows), tokenizer=tiny_tokenizer, max_seq_len=100,
                        model="openft-tiny", pace=Pace(tokens_per_second=50.0, setup_seconds=7.0, source="a test"))
    s = rep.stats
    assert rep.ok and s["labels"] == {"positive": 20, "negative": 10}
    assert s["messages_per_example"]["median"] == 3
    totals = [exact(tiny_tokenizer, r)[0] for r in rows]
    assert s["tokens_per_example"]["max"] == max(totals) and s["tokens_per_example"]["min"] == min(totals)
    assert s["trained_tokens_per_example"] == distribution([exact(tiny_tokenizer, r)[1] for r in rows])
    assert s["n_too_long"] == 1 and [(w.code, w.line) for w in rep.warnings] == [("example_too_long", 6)]
    assert s["total_tokens"] == sum(min(t, 100) for t in totals)
    est = s["estimate"]
    assert est["n_epochs"] == auto_n_epochs(30) == 4 and est["n_epochs_is_auto"]
    assert est["processed_tokens"] == 4 * s["total_tokens"]
    assert est["estimated_seconds"] == round(7.0 + est["processed_tokens"] / 50.0) and est["pace_source"] == "a test"


def test_auto_epochs_rule():
    assert [auto_n_epochs(n) for n in (1, 10, 33, 34, 100, 8333, 8334, 25_000, 10**6)] == [25, 10, 4, 3, 3, 3, 2, 1, 1]
    e = estimate(n_examples=100, total_tokens=1000, trained_tokens=100, n_epochs=2)  # no measured pace: no time
    assert e["n_epochs"] == 2 and e["trained_tokens"] == 200 and e["estimated_seconds"] is None
    assert human_duration(None).startswith("unknown") and human_duration(3725) == "1 h 02 min"


def test_distribution():
    d = distribution(list(range(1, 101)))
    assert d == {"min": 1, "max": 100, "mean": 50.5, "median": 51, "p5": 6, "p95": 95}
    assert distribution([]) is None
