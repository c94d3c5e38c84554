"""`openft data` commands end to end (in-process CLI runner; the real library and tiny model)."""

from __future__ import annotations

import json

import pytest
from datahelpers import chat, write_jsonl

from openft.data.reader import table_kind


def test_validate_human_report(tmp_path, run_data):
    rows = [chat(i, "positive" if i % 2 else "negative") for i in range(20)] + [chat(0, "negative")]
    p = write_jsonl(tmp_path / "train.jsonl", rows)
    code, out, err = run_data("validate", p, "-m", "openft-tiny", "--max-seq-len", "25")
    assert code == 0, out + err
    assert out.startswith(f"{p}: chat, 21 examples: OK (0 errors, ")
    assert f"{p}:21: same example as line 1  [duplicate_example]" in out
    assert "over the 25-token context: it will be truncated" in out
    assert "tokens/example" in out and "trained tokens/example" in out and "epochs (auto): 5" in out
    assert "time on this machine:" in out
    code, out, _ = run_data("validate", p)
    assert code == 0 and "add -m MODEL for token statistics" in out


def test_validate_json_and_exit_status(tmp_path, run_data):
    rows = [chat(i) for i in range(12)]
    rows[2]["messages"][2]["role"] = "gpt"
    p = write_jsonl(tmp_path / "bad.jsonl", rows)
    code, out, _ = run_data("validate", p, "--json", "-m", "openft-tiny")
    assert code == 1
    rep = json.loads(out)
    assert rep["ok"] is False and rep["errors"][0] == {
        "code": "unrecognized_role", "line": 3, "field": "messages[2].role",
        "message": "role 'gpt' is not one of system, user, assistant, tool, function"}
    assert rep["stats"]["n_valid_examples"] == 11 and rep["stats"]["estimate"]["n_epochs"] == 10
    code, out, _ = run_data("validate", p)
    assert code == 1 and "FAILED (2 errors, 0 warnings)" in out
    assert f"{p}:3 [messages[2].role]: role 'gpt' is not one of" in out


def test_inspect_shows_the_trained_tokens(tmp_path, run_data):
    p = write_jsonl(tmp_path / "i.jsonl", [chat(1), chat(2, "negative"), {"prompt": "x"}])
    code, out, err = run_data("inspect", p, "-m", "openft-tiny", "--no-color", "--line", "2")
    assert code == 0, out + err
    assert out.startswith(f"== {p}:2 (chat)\n")
    assert "<|im_start|>assistant\n[[negative<|im_end|>]]" in out
    assert "tokens, 2 trained" in out
    code, out, err = run_data("inspect", p, "-m", "openft-tiny", "--line", "3")
    assert code == 1 and err.strip() == f"error: {p}:3 [completion]: no 'completion'"
    code, out, err = run_data("inspect", p, "-m", "no-such-model", "--line", "3")
    assert code == 1 and err.startswith("error: ") and "Traceback" not in out + err
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"messages": [{"role": "user", "content": "hi"}\n')
    code, out, err = run_data("inspect", bad, "-m", "openft-tiny")
    assert code == 1 and err.startswith(f"error: {bad}:1: invalid JSON") and "Traceback" not in out + err


@pytest.mark.parametrize("name,kind", [("a.CSV", "csv"), ("b.tsv", "tsv"), ("c.xlsx", "xlsx"),
                                       ("d.parquet", "parquet"), ("e.jsonl", None)])
def test_table_kinds(name, kind):
    assert table_kind(name) == kind


def test_every_reference_file_converts_and_validates(tmp_path, run_data, shared_data):
    files = sorted(p for p in shared_data.rglob("*") if p.suffix.lower() in (".jsonl", ".csv", ".tsv", ".xlsx",
                                                                               ".parquet"))
    assert len(files) >= 3
    for src in files:
        out = tmp_path / f"{src.parent.name}-{src.stem}.jsonl"
        code, stdout, stderr = run_data("convert", src, out, "--system", "Answer with the label only.")
        assert code == 0, (src, stdout, stderr)
        code, stdout, stderr = run_data("validate", out, "-m", "openft-tiny")
        assert code == 0, (src, stdout, stderr)
