"""Split (stratified, deduplicated, leak-free) and the overlap report."""

from __future__ import annotations

import json
from collections import Counter

import pytest

from openft.data.split import overlap, split_file
from openft.errors import InvalidRequest
from tests.support.data import chat, write_jsonl


def read(path):
    return [json.loads(line) for line in open(path)]


def labels(path):
    return Counter(r["messages"][-1]["content"] for r in read(path))


def test_split_stratifies_and_removes_duplicates(tmp_path):
    rows = [chat(i, "positive" if i % 4 else "negative") for i in range(200)]
    dup = json.loads(json.dumps(rows[10]))
    dup["messages"][1]["content"] = "  REVIEW number 10:   it was FINE. "   # same after normalization
    rows += [rows[3], dup]
    p = write_jsonl(tmp_path / "all.jsonl", rows)
    r = split_file(p, valid=0.1, seed=1)
    assert (r.n_read, r.n_duplicates, r.n_train, r.n_valid, r.leaks) == (202, 2, 180, 20, 0)
    assert r.stratified_by == {"negative": (45, 5), "positive": (135, 15)}
    assert labels(tmp_path / "all.valid.jsonl") == {"positive": 15, "negative": 5}
    assert overlap(tmp_path / "all.train.jsonl", tmp_path / "all.valid.jsonl").clean
    again = split_file(p, valid=0.1, seed=1, train_out=tmp_path / "t2.jsonl", valid_out=tmp_path / "v2.jsonl")
    assert read(tmp_path / "v2.jsonl") == read(tmp_path / "all.valid.jsonl") and again.n_valid == 20


def test_split_without_labels_and_errors(tmp_path):
    rows = [chat(i, f"A long free-form answer number {i}, which is not a label at all.") for i in range(50)]
    p = write_jsonl(tmp_path / "free.jsonl", rows)
    r = split_file(p, valid=5)
    assert r.stratified_by is None and (r.n_train, r.n_valid) == (45, 5)
    with pytest.raises(InvalidRequest, match="--stratify needs labels"):
        split_file(p, stratify=True)
    with pytest.raises(InvalidRequest, match="--valid must be"):
        split_file(p, valid=1.5)
    bad = write_jsonl(tmp_path / "bad.jsonl", [chat(1), "{oops"])
    with pytest.raises(Exception) as e:
        split_file(bad)
    assert e.value.line == 2 and e.value.code == "invalid_json"


def test_overlap_finds_same_examples_and_same_prompts(tmp_path, run_data):
    a = write_jsonl(tmp_path / "a.jsonl", [chat(i) for i in range(10)])
    b = write_jsonl(tmp_path / "b.jsonl", [chat(20), chat(3), chat(5, "negative")])
    rep = overlap(a, b)
    assert (rep.n_same, rep.same, rep.n_same_prompt, rep.same_prompt) == (1, [(2, 4)], 1, [(3, 6)])
    code, out, _ = run_data("overlap", a, b)
    assert code == 1 and f"{b}:2 = {a}:4" in out and "LEAKAGE" in out
    code, out, _ = run_data("split", a, "--valid", "3", "--no-stratify")
    assert code == 0 and "overlap between the two: 0 examples" in out
    code, out, _ = run_data("overlap", tmp_path / "a.train.jsonl", tmp_path / "a.valid.jsonl")
    assert code == 0 and "no leakage" in out
