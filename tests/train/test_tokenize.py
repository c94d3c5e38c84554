"""Loss masks from chat templates, checked token by token, for several template styles.

Each template is written inline and installed on a copy of SmolLM2's tokenizer, with its turn
markers added as special tokens (as they are in the real models' tokenizers). The expected
mask is derived independently: a token is trained exactly when it lies inside one of the
literal strings `answer + end-of-turn` located in the rendered text.
"""

import copy

import pytest

from openft.data.encode import encode_example, encode_examples, render_mask
from openft.errors import DataError

LLAMA3 = ("{{ bos_token }}{% for m in messages %}{{ '<|start_header_id|>' + m['role'] + '<|end_header_id|>\\n\\n'"
          " + m['content'] | trim + '<|eot_id|>' }}{% endfor %}"
          "{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}{% endif %}")
GEMMA = ("{{ bos_token }}{% for m in messages %}{% if m['role'] == 'system' %}"
         "{{ raise_exception('System role not supported') }}{% endif %}"
         "{% if m['role'] == 'assistant' %}{% set role = 'model' %}{% else %}{% set role = m['role'] %}{% endif %}"
         "{{ '<start_of_turn>' + role + '\\n' + m['content'] | trim + '<end_of_turn>\\n' }}{% endfor %}"
         "{% if add_generation_prompt %}{{ '<start_of_turn>model\\n' }}{% endif %}")
MISTRAL = ("{{ bos_token }}{% for m in messages %}{% if m['role'] == 'user' %}{{ '[INST] ' + m['content'] + ' [/INST]' }}"
           "{% elif m['role'] == 'assistant' %}{{ m['content'] + eos_token }}{% endif %}{% endfor %}")
QWEN25 = ("{% if tools %}<|im_start|>system\n{% if messages[0]['role'] == 'system' %}{{ messages[0]['content'] }}"
          "{% else %}You are Qwen, a helpful assistant.{% endif %}\n\n# Tools\n<tools>"
          "{% for t in tools %}\n{{ t | tojson }}{% endfor %}\n</tools><|im_end|>\n"
          "{% elif messages[0]['role'] != 'system' %}<|im_start|>system\nYou are Qwen, a helpful assistant.<|im_end|>\n{% endif %}"
          "{% for m in messages %}{% if m['role'] == 'system' and tools %}{% else %}"
          "{{ '<|im_start|>' + m['role'] + '\\n' + m['content'] + '<|im_end|>\\n' }}{% endif %}{% endfor %}"
          "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}")
# Qwen3 style: only assistant turns after the last user message carry a (here empty) think block,
# so rendering a prefix gives a different text for earlier turns than the full conversation.
QWEN3 = ("{% set ns = namespace(last=-1) %}{% for m in messages %}{% if m['role'] == 'user' %}"
         "{% set ns.last = loop.index0 %}{% endif %}{% endfor %}"
         "{% for m in messages %}{% if m['role'] == 'assistant' and loop.index0 > ns.last %}"
         "{{ '<|im_start|>assistant\\n<think>\\n\\n</think>\\n\\n' + m['content'] + '<|im_end|>\\n' }}"
         "{% else %}{{ '<|im_start|>' + m['role'] + '\\n' + m['content'] + '<|im_end|>\\n' }}{% endif %}{% endfor %}"
         "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}")

TEMPLATES = {  # name -> (template, special tokens, end-of-turn text after an answer)
    "chatml-smollm2": (None, [], "<|im_end|>"),
    "llama3": (LLAMA3, ["<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"], "<|eot_id|>"),
    "gemma": (GEMMA, ["<start_of_turn>", "<end_of_turn>"], "<end_of_turn>"),
    "mistral": (MISTRAL, ["[INST]", "[/INST]"], "<|im_end|>"),
    "qwen2.5": (QWEN25, [], "<|im_end|>"),
    "qwen3": (QWEN3, ["<think>", "</think>"], "<|im_end|>"),
}

CONVERSATION = [
    {"role": "user", "content": "Is 'great food' positive or negative?"},
    {"role": "assistant", "content": "positive"},
    {"role": "user", "content": "And 'cold fries, rude staff'?"},
    {"role": "assistant", "content": "negative", "weight": 0},
    {"role": "user", "content": "And 'loved it'?"},
    {"role": "assistant", "content": "positive, clearly"},
]


def with_template(tokenizer, name):
    template, specials, eot = TEMPLATES[name]
    tok = copy.deepcopy(tokenizer)
    if template is not None:
        tok.chat_template = template
    if specials:
        tok.add_special_tokens({"additional_special_tokens": specials})
    return tok, eot


def expected_mask(tok, text, answers, eot):
    """Trained iff the token lies inside one of the literal `answer + eot` strings (found in order)."""
    spans, pos = [], 0
    for a in answers:
        at = text.index(a + eot, pos)
        spans.append((at, at + len(a + eot)))
        pos = at + len(a + eot)
    enc = tok(text, add_special_tokens=False, return_offsets_mapping=True)
    return enc["input_ids"], [int(any(s <= a and b <= e for s, e in spans)) for a, b in enc["offset_mapping"]]


def trained_runs(tok, enc):
    runs, cur = [], []
    for t, m in zip(enc.input_ids, enc.mask):
        if m:
            cur.append(t)
        elif cur:
            runs.append(tok.decode(cur))
            cur = []
    if cur:
        runs.append(tok.decode(cur))
    return runs


@pytest.mark.parametrize("name", list(TEMPLATES))
def test_multi_turn_mask_token_by_token(tiny_tokenizer, name):
    tok, eot = with_template(tiny_tokenizer, name)
    messages = CONVERSATION
    enc = encode_example(tok, {"messages": messages}, max_seq_len=None)
    text = tok.apply_chat_template([{k: v for k, v in m.items() if k != "weight"} for m in messages], tokenize=False)
    think = "<think>\n\n</think>\n\n" if name == "qwen3" else ""
    ids, mask = expected_mask(tok, text, ["positive", think + "positive, clearly"], eot)
    assert enc.input_ids == ids
    assert enc.mask == mask
    assert trained_runs(tok, enc) == ["positive" + eot, think + "positive, clearly" + eot]
    assert not enc.truncated


def test_end_of_turn_trained_but_not_the_newline_after_it(tiny_tokenizer):
    tok = tiny_tokenizer
    enc = encode_example(tok, {"messages": [{"role": "user", "content": "hi"},
                                            {"role": "assistant", "content": "yo"}]}, None)
    pieces = [(tok.decode([t]), m) for t, m in zip(enc.input_ids, enc.mask)]
    trained = [p for p, m in pieces if m]
    assert trained == ["yo", "<|im_end|>"]
    assert pieces[-1] == ("\n", 0)
    assert tok.eos_token_id in [t for t, m in zip(enc.input_ids, enc.mask) if m]


def test_system_message_and_tools(tiny_tokenizer):
    tok, _ = with_template(tiny_tokenizer, "qwen2.5")
    tools = [{"type": "function", "function": {"name": "lookup", "parameters": {"type": "object"}}}]
    ex = {"messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "x?"},
                       {"role": "assistant", "content": "y"}], "tools": tools}
    enc = encode_example(tok, ex, None)
    text = tok.decode(enc.input_ids)
    assert '"name": "lookup"' in text and "Be brief." in text
    assert trained_runs(tok, enc) == ["y<|im_end|>"]


def test_tool_calls_on_a_template_without_a_tool_format_use_the_default_format(tiny_tokenizer):
    """SmolLM2's template (the tiny model's) knows no tools: a line with `tools`, a call and its
    result renders in openft's default (Hermes/Qwen) format, the call's tokens trained."""
    import json

    from openft.data.tool_format import TOOLS_HEADER

    tools = [{"type": "function", "function": {"name": "get_weather", "parameters": {
        "type": "object", "properties": {"city": {"type": "string"}}}}}]
    ex = {"tools": tools, "messages": [
        {"role": "user", "content": "Weather in Oslo?"},
        {"role": "assistant", "tool_calls": [{"id": "c1", "type": "function", "function": {
            "name": "get_weather", "arguments": json.dumps({"city": "Oslo"})}}]},
        {"role": "tool", "tool_call_id": "c1", "content": "sunny"},
        {"role": "assistant", "content": "It is sunny."}]}
    enc = encode_example(tiny_tokenizer, ex, None)
    text = tiny_tokenizer.decode(enc.input_ids)
    assert text.startswith("<|im_start|>system\n" + TOOLS_HEADER + "\n" + json.dumps(tools[0]) + "\n</tools>")
    assert "<|im_start|>user\n<tool_response>\nsunny\n</tool_response><|im_end|>" in text
    assert trained_runs(tiny_tokenizer, enc) == [
        '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Oslo"}}\n</tool_call><|im_end|>',
        "It is sunny.<|im_end|>"]


def test_prompt_completion_trains_completion_and_eos(tiny_tokenizer):
    tok = tiny_tokenizer
    enc = encode_example(tok, {"prompt": "Review: tasty soup ->", "completion": " positive"}, None)
    p = tok("Review: tasty soup ->")["input_ids"]
    assert enc.input_ids[:len(p)] == p and enc.mask[:len(p)] == [0] * len(p)
    assert trained_runs(tok, enc) == [" positive<|im_end|>"]
    assert enc.input_ids[-1] == tok.eos_token_id


def test_truncation_from_the_end(tiny_tokenizer):
    ex = {"messages": [{"role": "user", "content": "word " * 50}, {"role": "assistant", "content": "ok"}]}
    full = encode_example(tiny_tokenizer, ex, None)
    cut = encode_example(tiny_tokenizer, ex, 20)
    assert cut.truncated and len(cut) == 20 and cut.input_ids == full.input_ids[:20]
    assert cut.n_trained == 0  # the answer was cut away: the trainer skips (and reports) it


def test_all_weights_zero_trains_nothing(tiny_tokenizer):
    ex = {"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b", "weight": 0}]}
    assert encode_example(tiny_tokenizer, ex, None).n_trained == 0


def test_bad_examples_fail_clearly(tiny_tokenizer):
    with pytest.raises(DataError) as e:
        encode_example(tiny_tokenizer, {"text": "hello"}, None)
    assert "messages" in e.value.message
    tok, _ = with_template(tiny_tokenizer, "gemma")
    with pytest.raises(DataError) as e:
        encode_example(tok, {"messages": [{"role": "system", "content": "s"}, {"role": "user", "content": "u"},
                                          {"role": "assistant", "content": "a"}]}, None)
    assert "System role not supported" in e.value.message and e.value.field == "messages"


def test_batched_encoding_equals_one_at_a_time(tiny_tokenizer, monkeypatch, tmp_path):
    """The trainer tokenizes chat renderings a batch at a time (across batch boundaries here: 3 per
    call); every example's ids, mask and cut equal its own encoding, and a bad example in the middle
    of a file is reported at its own line."""
    import json

    import openft.data.encode as T
    from openft.train.data import load_dataset

    monkeypatch.setattr(T, "BATCH", 3)
    tok, _ = with_template(tiny_tokenizer, "qwen2.5")
    examples = [{"messages": CONVERSATION},
                {"prompt": "Review: tasty soup ->", "completion": " positive"},
                {"messages": [{"role": "user", "content": "word " * 50}, {"role": "assistant", "content": "ok"}]},
                {"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b", "weight": 0}]},
                *({"messages": [{"role": "user", "content": f"q{i} é " * i}, {"role": "assistant", "content": f"a{i}"},
                                {"role": "user", "content": "more"}, {"role": "assistant", "content": "x " * i}]}
                  for i in range(1, 8))]
    for cut in (None, 20):
        assert encode_examples(tok, examples, cut) == [encode_example(tok, e, cut) for e in examples]
    lines = [json.dumps(e) for e in examples]
    lines.insert(6, json.dumps({"text": "hello"}))
    (tmp_path / "t.jsonl").write_text("\n".join(lines) + "\n")
    with pytest.raises(DataError) as e:
        load_dataset(tok, tmp_path / "t.jsonl", None, "training_file")
    assert e.value.line == 7 and e.value.file == "training_file"


def test_render_mask(tiny_tokenizer):
    enc = encode_example(tiny_tokenizer, {"messages": [{"role": "user", "content": "hi"},
                                                       {"role": "assistant", "content": "yo"}]}, None)
    plain = render_mask(tiny_tokenizer, enc, color=False)
    assert "[[yo<|im_end|>]]" in plain and "user\nhi" in plain
    assert "2 trained" in plain
    colored = render_mask(tiny_tokenizer, enc, color=True)
    assert "\x1b[42;30myo<|im_end|>\x1b[0m" in colored


def test_tool_call_arguments_are_rendered_as_served(tiny_tokenizer):
    """OpenAI's training lines carry tool-call `arguments` as a JSON string; templates such as
    Qwen2.5's and Llama 3.1's apply `tojson` to them. The trainer must render them as the serving
    engine does (an object), or it trains on double-encoded JSON the server never shows."""
    import copy

    from openft.data.encode import chat_spans
    from openft.data.formats import template_messages

    tok = copy.deepcopy(tiny_tokenizer)
    tok.chat_template = (
        "{% for m in messages %}<|{{ m.role }}|>{{ m.content or '' }}"
        "{% for c in m.tool_calls or [] %}<tool_call>{\"name\": \"{{ c.function.name }}\", "
        "\"arguments\": {{ c.function.arguments | tojson }}}</tool_call>{% endfor %}\n{% endfor %}"
        "{% if add_generation_prompt %}<|assistant|>{% endif %}")
    messages = [{"role": "user", "content": "Weather in Paris?"},
                {"role": "assistant", "content": None, "tool_calls": [
                    {"id": "call_1", "type": "function",
                     "function": {"name": "get_weather", "arguments": "{\"city\": \"Paris\"}"}}]}]
    full, spans = chat_spans(tok, messages)
    served = tok.apply_chat_template(template_messages(messages), tokenize=False)
    assert full == served
    assert '"arguments": {"city": "Paris"}' in full[spans[0][0]:spans[0][1]]
