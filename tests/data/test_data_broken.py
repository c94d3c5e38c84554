"""The broken-file corpus: each file gets a precise, located error and never a traceback."""

from __future__ import annotations

import codecs
import json

import pytest

from openft.data.validate import validate_file
from tests.support.data import chat, write_jsonl


def codes(rep):
    return [(e.code, e.line, e.field) for e in rep.errors]


def test_valid_file_passes(tmp_path):
    rep = validate_file(write_jsonl(tmp_path / "ok.jsonl", [chat(i) for i in range(12)]))
    assert rep.ok and rep.format == "chat" and rep.n_examples == 12
    assert rep.errors == [] and rep.warnings == []


def test_truncated_json(tmp_path):
    rows = [json.dumps(chat(i)) for i in range(12)]
    rows[4] = rows[4][:57]
    rep = validate_file(write_jsonl(tmp_path / "t.jsonl", rows))
    assert codes(rep) == [("invalid_json", 5, None)]
    assert rep.errors[0].message == ("invalid JSON: Unterminated string starting at column 45; the line ends before the "
                                      "object closes (truncated?)")
    assert str(rep.errors[0]).startswith(f"{tmp_path / 't.jsonl'}:5: invalid JSON")


def test_wrong_role_and_missing_content_and_keys(tmp_path):
    rows = [chat(i) for i in range(12)]
    rows[1]["messages"][1]["role"] = "bot"
    rows[2]["messages"][2]["content"] = ""
    rows[3]["messages"][2]["content"] = 42
    del rows[4]["messages"][1]["content"]
    rows[5]["messages"][0]["foo"] = 1
    rows[6]["messages"] = [m for m in rows[6]["messages"] if m["role"] != "assistant"]
    rows[7]["messages"] = "hello"
    rows[8]["messages"][2]["weight"] = 2
    del rows[9]["messages"][0]["role"]
    rep = validate_file(write_jsonl(tmp_path / "r.jsonl", rows), display_name="file-abc")
    got = codes(rep)
    assert ("unrecognized_role", 2, "messages[1].role") in got
    assert ("missing_content", 3, "messages[2].content") in got
    assert ("missing_content", 4, "messages[2].content") in got
    assert ("message_missing_key", 5, "messages[1].content") in got
    assert ("message_unrecognized_key", 6, "messages[0].foo") in got
    assert ("example_missing_assistant_message", 7, "messages") in got
    assert ("missing_messages_list", 8, "messages") in got
    assert ("invalid_weight", 9, "messages[2].weight") in got
    assert ("message_missing_key", 10, "messages[0].role") in got
    assert len(got) == 9
    bad_role = next(e for e in rep.errors if e.code == "unrecognized_role")
    assert str(bad_role) == "file-abc:2 [messages[1].role]: role 'bot' is not one of system, user, assistant, tool, function"


def test_cookbook_false_alarms_are_valid(tmp_path):
    """Tool calls, weight, the tool role: the cookbook flags them, OpenAI accepts them."""
    tool_ex = {"messages": [
        {"role": "user", "content": "Weather in Paris?"},
        {"role": "assistant", "tool_calls": [{"id": "c1", "type": "function",
                                              "function": {"name": "weather", "arguments": "{\"city\": \"Paris\"}"}}]},
        {"role": "tool", "tool_call_id": "c1", "content": "18C"},
        {"role": "assistant", "content": "18C and sunny.", "weight": 1}],
        "tools": [{"type": "function", "function": {"name": "weather", "parameters": {"type": "object"}}}],
        "parallel_tool_calls": False}
    weighted = chat(0)
    weighted["messages"].insert(2, {"role": "assistant", "content": "draft", "weight": 0})
    weighted["messages"].insert(3, {"role": "user", "content": "again"})
    rep = validate_file(write_jsonl(tmp_path / "tools.jsonl", [tool_ex] * 6 + [weighted] + [chat(i) for i in range(5)]))
    assert rep.ok, [str(e) for e in rep.errors]


def test_binary_garbage(tmp_path):
    p = tmp_path / "g.jsonl"
    p.write_bytes(bytes(range(256)) * 40)
    rep = validate_file(p)
    assert codes(rep) == [("invalid_encoding", 1, None)]
    assert "binary" in rep.errors[0].message


def test_invalid_utf8_line(tmp_path):
    p = tmp_path / "u.jsonl"
    rows = [json.dumps(chat(i)).encode() for i in range(12)]
    rows[6] = rows[6][:30] + b"\xff\xfe" + rows[6][30:]
    p.write_bytes(b"\n".join(rows) + b"\n")
    rep = validate_file(p)
    assert codes(rep) == [("invalid_encoding", 7, None)]
    assert "0xff at column 31" in rep.errors[0].message


@pytest.mark.parametrize("enc", ["utf-16", "utf-16-le"])
def test_utf16_file(tmp_path, enc):
    p = tmp_path / "w.jsonl"
    p.write_text("".join(json.dumps(chat(i)) + "\n" for i in range(12)), encoding=enc)
    rep = validate_file(p)
    assert codes(rep) == [("invalid_encoding", 1, None)]
    assert "UTF-16" in rep.errors[0].message and "openft data convert" in rep.errors[0].message


def test_utf8_bom_is_accepted_with_no_error(tmp_path):
    p = tmp_path / "b.jsonl"
    p.write_bytes(codecs.BOM_UTF8 + "".join(json.dumps(chat(i)) + "\n" for i in range(12)).encode())
    rep = validate_file(p)
    assert rep.ok and rep.n_examples == 12


def test_50mb_single_line(tmp_path):
    p = tmp_path / "big.jsonl"
    with open(p, "w") as f:
        f.write('{"messages": [{"role": "user", "content": "')
        chunk = "x" * (1 << 20)
        for _ in range(50):
            f.write(chunk)
        f.write('"}, {"role": "assistant", "content": "ok"}]}\n')
        for i in range(3):
            f.write(json.dumps(chat(i)) + "\n")
    rep = validate_file(p)
    assert ("line_too_long", 1, None) in codes(rep)
    assert "52.4 MB" in rep.errors[0].message
    assert rep.n_examples == 4 and ("invalid_n_examples", None, None) in codes(rep)


def test_mixed_formats(tmp_path):
    rows = [chat(i) for i in range(12)]
    rows[3] = {"prompt": "a", "completion": "b"}
    rep = validate_file(write_jsonl(tmp_path / "m.jsonl", rows))
    assert codes(rep) == [("mixed_formats", 4, None)]
    assert "from line 1" in rep.errors[0].message


def test_empty_lines_non_objects_unknown_records(tmp_path):
    rows = [chat(i) for i in range(12)]
    rows[2] = ""
    rows[5] = "[1, 2]"
    rows[7] = {"text": "hello"}
    rep = validate_file(write_jsonl(tmp_path / "e.jsonl", rows))
    assert codes(rep) == [("empty_line", 3, None), ("data_type", 6, None), ("unknown_format", 8, None)]


def test_too_few_examples_and_empty_file(tmp_path):
    rep = validate_file(write_jsonl(tmp_path / "few.jsonl", [chat(i) for i in range(3)]))
    assert codes(rep) == [("invalid_n_examples", None, None)]
    assert "3 examples; at least 10" in rep.errors[0].message
    (tmp_path / "empty.jsonl").write_text("")
    rep = validate_file(tmp_path / "empty.jsonl")
    assert codes(rep) == [("invalid_n_examples", None, None)]
    with pytest.raises(Exception) as e:
        rep.raise_for_errors()
    assert e.value.code == "invalid_n_examples"


def test_duplicates_are_warnings_with_both_lines(tmp_path):
    rows = [chat(i) for i in range(12)] + [chat(3)]
    rep = validate_file(write_jsonl(tmp_path / "d.jsonl", rows))
    assert rep.ok
    assert [(w.code, w.line, w.message) for w in rep.warnings] == [("duplicate_example", 13, "same example as line 4")]


def test_raise_for_errors_is_located_and_counts_the_rest(tmp_path):
    rows = [chat(i) for i in range(12)]
    rows[1]["messages"][1]["role"] = "bot"
    rows[2]["messages"][1]["role"] = "bot"
    rep = validate_file(write_jsonl(tmp_path / "x.jsonl", rows), display_name="train.jsonl")
    with pytest.raises(Exception) as e:
        rep.raise_for_errors()
    assert e.value.code == "unrecognized_role" and e.value.line == 2 and e.value.field == "messages[1].role"
    assert str(e.value) == ("train.jsonl:2 [messages[1].role]: role 'bot' is not one of system, user, assistant, "
                            "tool, function (and 1 more error)")


def test_many_errors_are_counted_but_bounded(tmp_path):
    rows = ["{not json"] * 500
    rep = validate_file(write_jsonl(tmp_path / "many.jsonl", rows))
    assert rep.counts["invalid_json"] == 500 and len(rep.errors) == 50


def test_tables_and_evals_are_told_to_convert(tmp_path, shared_data):
    rep = validate_file(shared_data / "sentiment" / "reviews.csv")
    assert codes(rep) == [("invalid_file_format", None, None)] and "openft data convert" in rep.errors[0].message
    rep = validate_file(shared_data / "conjnli" / "examples.jsonl")
    assert rep.format == "evals" and codes(rep) == [("invalid_file_format", 1, None)]


def test_cli_reports_broken_files_without_traceback(tmp_path, run_data):
    p = tmp_path / "w.jsonl"
    p.write_text("".join(json.dumps(chat(i)) + "\n" for i in range(12)), encoding="utf-16")
    code, out, err = run_data("validate", p)
    assert code == 1 and "Traceback" not in out + err
    assert f"{p}:1: the file is UTF-16-LE encoded" in out
    code, out, err = run_data("validate", tmp_path / "missing.jsonl")
    assert code == 1 and err.strip() == f"error: {tmp_path / 'missing.jsonl'}: no such file"
    g = tmp_path / "g.jsonl"
    g.write_bytes(bytes(range(256)) * 40)
    code, out, err = run_data("validate", g, "--json")
    assert code == 1 and json.loads(out)["errors"][0]["code"] == "invalid_encoding"


def test_many_duplicates_are_all_counted(tmp_path):
    rep = validate_file(write_jsonl(tmp_path / "dups.jsonl", [chat(1)] * 200 + [chat(i) for i in range(2, 7)]))
    assert rep.ok and rep.counts["duplicate_example"] == 199 and rep.stats["n_duplicates"] == 199
    assert len(rep.warnings) == 50 and rep.warnings[0].line == 2 and rep.warnings[-1].line == 51
