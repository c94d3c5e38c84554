"""The one JSONL reader (`openft.data.reader.iter_records`) and its consumers read a file alike:
a byte-order mark, blank lines, bad bytes and bad JSON give the same records or located errors
to validation, the trainer, convert, split and the review step."""

from __future__ import annotations

import codecs
import json

import pytest

from openft.data.reader import iter_records
from openft.data.validate import validate_file
from openft.errors import DataError
from tests.support.data import chat


def bom_file(path, rows, *, blank_at: int | None = None):
    lines = [json.dumps(r) for r in rows]
    if blank_at is not None:
        lines.insert(blank_at, "")
    path.write_bytes(codecs.BOM_UTF8 + ("\n".join(lines) + "\n").encode())
    return path


def test_a_byte_order_mark_is_skipped_and_lines_keep_their_numbers(tmp_path):
    rows = [chat(i) for i in range(4)]
    got = list(iter_records(bom_file(tmp_path / "bom.jsonl", rows, blank_at=2)))
    assert [rec for _, _, rec in got] == rows
    assert [line for line, _, _ in got] == [1, 2, 4, 5]  # the blank line 3 is skipped, not renumbered


def test_the_trainer_reads_what_validation_accepted(tmp_path, tiny_tokenizer):
    from openft.train.data import load_dataset

    path = bom_file(tmp_path / "bom.jsonl", [chat(i) for i in range(12)])
    assert validate_file(path).ok
    data = load_dataset(tiny_tokenizer, path, 256, "training_file")  # raised "Unexpected UTF-8 BOM" before
    assert data.n_lines == 12 and len(data) == 12


def test_the_trainer_names_the_real_line_of_a_bad_example(tmp_path, tiny_tokenizer):
    from openft.train.data import load_dataset

    rows = [chat(i) for i in range(4)]
    rows[2] = {"messages": []}
    with pytest.raises(DataError) as e:
        load_dataset(tiny_tokenizer, bom_file(tmp_path / "b.jsonl", rows, blank_at=1), 256, "training_file")
    assert e.value.line == 4  # file line 4 (a blank line before it), not the 3rd record


def test_errors_are_located_and_never_tracebacks(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_bytes(b'{"a": 1}\n{"a": \xff}\n')
    with pytest.raises(DataError) as e:
        list(iter_records(bad, name="training_file"))
    assert (e.value.code, e.value.line) == ("invalid_encoding", 2)
    deep = tmp_path / "deep.jsonl"
    deep.write_text("[" * 100_000 + "]" * 100_000 + "\n")
    with pytest.raises(DataError) as e:
        list(iter_records(deep))
    assert e.value.code == "invalid_json" and "nested too deeply" in e.value.message
    with pytest.raises(DataError) as e:
        list(iter_records(tmp_path / "missing.jsonl", name="training_file"))
    assert e.value.code == "file_not_found"


def test_start_line_skips_what_comes_before(tmp_path):
    path = tmp_path / "s.jsonl"
    path.write_text('not json\n\n{"a": 1}\n')
    assert [(n, r) for n, _, r in iter_records(path, start_line=2)] == [(3, {"a": 1})]


def test_convert_split_and_review_read_a_byte_order_mark(tmp_path):
    from openft.data.convert import convert_file
    from openft.data.split import split_file
    from openft.data.synthesize import apply_review

    path = bom_file(tmp_path / "bom.jsonl", [chat(i, "positive" if i % 2 else "negative") for i in range(20)])
    assert convert_file(path, tmp_path / "c.jsonl").n_written == 20
    split_file(path, valid=0.2, train_out=tmp_path / "t.jsonl", valid_out=tmp_path / "v.jsonl")
    n_lines = [len((tmp_path / f).read_text().splitlines()) for f in ("t.jsonl", "v.jsonl")]
    assert sum(n_lines) == 20 and min(n_lines) > 0
    review = bom_file(tmp_path / "r.jsonl", [{"status": "keep", "question": "Q?", "answer": "A."}])
    assert apply_review(review, tmp_path / "out.jsonl")["written"] == 1
