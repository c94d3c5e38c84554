"""Preference files: the data toolkit's checks and counts for a dpo job, and the trainer's pairs."""

import json

from openft.data.validate import validate_file
from openft.train import dpo
from tests.support.data import pair, write_pairs


def test_dpo_counts_both_sequences_as_the_trainer_does(tmp_path, tiny_tokenizer):
    path = write_pairs(tmp_path / "p.jsonl", 12)
    rep = validate_file(path, tokenizer=tiny_tokenizer, method="dpo")
    assert rep.ok and not any(w.code == "preference_format" for w in rep.warnings)
    data = dpo.load_pairs(tiny_tokenizer, path, None)
    assert rep.stats["total_tokens"] == data.n_tokens  # prompt + chosen, prompt + rejected, every pair
    sft = validate_file(path, tokenizer=tiny_tokenizer)
    assert any(w.code == "preference_format" for w in sft.warnings)
    assert sft.stats["total_tokens"] < rep.stats["total_tokens"]


def test_identical_and_missing_outputs_are_located(tmp_path):
    lines = [pair(i, "great") for i in range(12)]
    lines[2] = {k: v for k, v in lines[2].items() if k != "preferred_output"}
    lines[6]["non_preferred_output"] = [{"role": "assistant", "content": " positive "}]  # same answer, spaced
    path = tmp_path / "bad.jsonl"
    path.write_text("".join(json.dumps(x) + "\n" for x in lines))
    rep = validate_file(path, method="dpo")
    found = {(e.code, e.line, e.field) for e in rep.errors}
    assert ("missing_preferred_output", 3, "preferred_output") in found
    assert ("identical_outputs", 7, "non_preferred_output") in found


def test_pair_tokens_and_masks(tiny_tokenizer):
    p = dpo.encode_pair(tiny_tokenizer, pair(0, "great"), None)
    text = tiny_tokenizer.decode(p.prompt)
    assert text.rstrip().endswith("assistant") and "Review 0" in text  # the assistant header stays in the prompt
    assert tiny_tokenizer.decode([t for t, m in zip(p.chosen, p.chosen_mask) if m]).startswith("positive")
    assert tiny_tokenizer.decode([t for t, m in zip(p.rejected, p.rejected_mask) if m]).startswith("negative")
    assert len(dpo.encode_pair(tiny_tokenizer, pair(0, "great"), len(p.prompt) + 1).chosen) == 1  # truncated
