"""Shared prompt prefixes in the runner: sequences that join together and begin alike feed their
common prefix once, and every sequence still gets the logits (and the cache) it gets alone."""

from __future__ import annotations

import pytest
import torch

from openft.serve.lora import load_adapter
from openft.serve.model_runner import ModelRunner, Slot
from openft.serve.prefill import MIN_SHARED, share_prefixes

SYSTEM = "Classify the sentiment of the review. Answer with one word: positive or negative."
REVIEWS = ["Great food, friendly staff.", "The worst service I have had in years!", "ok",
           "Great food, friendly staff.", "I would come back for the soup alone, it was that good."]


@pytest.fixture(scope="module")
def runner(tiny_model_dir):
    return ModelRunner(tiny_model_dir, device="cpu", dtype=torch.float32, name="openft-tiny")


def chat_ids(tok, review: str) -> list[int]:
    msgs = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": review}]
    return tok(tok.apply_chat_template(msgs, add_generation_prompt=True, tokenize=False),
               add_special_tokens=False)["input_ids"]


def greedy(runner, slots: list[Slot], steps: int) -> tuple[list[list[int]], torch.Tensor]:
    """Feed `slots` together for `steps` greedy steps; (tokens per slot, first step's logits)."""
    for s in slots:
        runner.add(s)
    outs, first = [[] for _ in slots], None
    try:
        for step in range(steps):
            logits, _ = runner.forward()
            first = logits.clone() if step == 0 else first
            for out, s, row in zip(outs, slots, logits):
                out.append(int(row.argmax()))
                s.feed = [out[-1]]
    finally:
        for s in list(slots):
            runner.remove(s)
    return outs, first


def test_joining_prompts_share_their_prefix_and_answer_as_alone(runner, adapters):
    tok = runner.tokenizer
    adapter = load_adapter(adapters[0], "a0", runner.linear_names, runner.dtype, runner.device)
    prompts = [chat_ids(tok, r) for r in REVIEWS]
    short = tok("Hi", add_special_tokens=False)["input_ids"]          # shorter than MIN_SHARED: never shares
    cases = [(p, None) for p in prompts] + [(prompts[1], adapter), (prompts[4], adapter), (short, None)]

    def slots():
        return [Slot(feed=list(p), adapter=a) for p, a in cases]

    before = runner.shared_tokens
    together, logits = greedy(runner, slots(), steps=4)
    saved = runner.shared_tokens - before
    alone = [greedy(runner, [s], steps=4) for s in slots()]
    assert runner.shared_tokens - before == saved                   # nothing is shared by a lone sequence
    # base prompts 1..4 reuse prompt 0's head; the second adapter prompt reuses the first's; the
    # duplicate of prompt 0 shares all but its last token
    head = len(chat_ids(tok, "")) - 5                               # "<|im_end|>\n<|im_start|>assistant\n" differs
    assert saved >= 5 * head and len(prompts[3]) - 1 <= saved
    for i, (toks, lg) in enumerate(alone):
        assert torch.allclose(logits[i], lg[0], atol=1e-4), i
        assert together[i] == toks[0], i                            # the copied prefix serves decoding too
    assert together[5] != together[1]                               # the adapter's rows did not share the base's


def test_who_shares_with_whom():
    a, b = object(), object()
    base = list(range(100, 120))
    seqs = [Slot(feed=base + [1, 2]), Slot(feed=base + [3]), Slot(feed=base[:5] + [9] * 20),
            Slot(feed=base + [4], adapter=a), Slot(feed=base + [5], adapter=a), Slot(feed=base + [6], adapter=b),
            Slot(feed=base + [7], want_prompt_logits=True), Slot(feed=list(base))]
    shared = share_prefixes(seqs, first=3)
    # slot numbers start at `first`; a member keeps one token of its own (the duplicate: 19 of 20)
    assert shared == {4: (3, 20), 7: (6, 20), 10: (3, 19)}
    assert share_prefixes(seqs[:1], first=0) == {} and MIN_SHARED <= 20
